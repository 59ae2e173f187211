package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/internal/localrun"
)

// TestNewUserS26ExportNeverReplacesDemoInit: make demo's layout, ROOT/demo/W.safetensors as the
// --init of the run ROOT/runs/demo-DATE: checkpoint export --out ROOT/demo/W.safetensors --force
// is refused in one line, exit 2, W intact. The run folder is neither beside W nor above it, so
// the check passed it over and export replaced the weights the demo (and its --resume) starts
// from (found exporting runs/demo-DATE over demo/mnist-tiny.safetensors).
func TestNewUserS26ExportNeverReplacesDemoInit(t *testing.T) {
	_, file := evalFixture(t)
	root := t.TempDir()
	w := filepath.Join(root, "demo", "w.safetensors")
	run := filepath.Join(root, "runs", "demo-1")
	if err := os.MkdirAll(filepath.Dir(w), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := runCLI(t, context.Background(), nil, "checkpoint", "export", file, "--out", w); err != nil {
		t.Fatal(err)
	}
	if err := localrun.WriteManifest(run, localrun.Manifest{ConfigHash: "x", Coordinators: 1, Trainers: 1, Init: w}); err != nil {
		t.Fatal(err)
	}
	sum := fileSum(t, w)
	args := []string{"checkpoint", "export", file, "--out", w, "--force"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "checkpoint export: --out "+w+" is the --init weights of the run in "+run+
		", the input of a run; an output never replaces one (nothing was written)")
	if fileSum(t, w) != sum {
		t.Errorf("%s changed", w)
	}
}
