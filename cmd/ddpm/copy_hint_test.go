package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestSampleCopyWithoutRunConfig: a plain cp of a trainer's checkpoints.db into a folder with
// no run.yaml used to be asked whether it was "a copy made with `ddpm checkpoint fetch`?",
// though a fetched file beside its run.yaml samples fine: what is missing is the run config,
// and the line says which file to copy where. sample and eval bpd alike, exit 2.
func TestSampleCopyWithoutRunConfig(t *testing.T) {
	_, file := evalFixture(t)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cp := filepath.Join(dir, "COPY.db")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("checkpoint %s: no run.yaml beside it (nor in the folder above) to say which run it belongs to; the model is built from the run config: copy the run's run.yaml (from its run folder or the trainer's --data-dir) into %s", cp, dir)
	out := filepath.Join(t.TempDir(), "x.png")
	for _, args := range [][]string{
		{"sample", "--checkpoint", cp, "--n", "1", "--out", out},
		{"eval", "bpd", "--checkpoint", cp, "--n", "2", "--batch", "2"},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, want)
	}
	mustNotExist(t, out)
}
