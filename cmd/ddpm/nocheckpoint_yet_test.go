package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// TestLocalRunWithoutCheckpointYet: a ddpm local run folder whose trainers have written no
// checkpoint yet (a run just started, or stopped before its first checkpoint) is named as such
// by every command that reads a checkpoint, with the step of the first and the way on; it was
// "checkpoint RUN: a folder without checkpoints.db (nor trainer-0/checkpoints.db)", as for any
// folder, which said nothing of the run. Exit status 2, nothing written.
func TestLocalRunWithoutCheckpointYet(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(filepath.Join(dir, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, localrun.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	man, err := localrun.NewManifest(run.Hash(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := localrun.WriteManifest(dir, man); err != nil {
		t.Fatal(err)
	}
	want := "checkpoint " + dir + ": a ddpm local run without a checkpoint yet (its trainers write the first at step 50, checkpoint_every of " +
		filepath.Join(dir, "run.yaml") + "; ddpm local --resume " + dir + " trains on when the run is stopped)"
	out := filepath.Join(t.TempDir(), "out")
	for _, args := range [][]string{
		{"checkpoint", "list", dir},
		{"checkpoint", "verify", dir},
		{"checkpoint", "export", dir, "--out", out + ".safetensors"},
		{"sample", "--checkpoint", dir, "--n", "1", "--out", out + ".png"},
		{"eval", "bpd", "--checkpoint", dir},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, want)
	}
	mustNotExist(t, out+".safetensors")
	mustNotExist(t, out+".png")
}
