package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
	"ddpm/trainer"
)

// TestWrongKindOfFile: a file of one kind given where another is expected is named for what it
// is, with the flag that takes it, in one line with exit status 2: an empty file or a checkpoint
// file as --config (not a list of every missing field, nor a YAML tokenizer's complaint),
// safetensors weights as a checkpoint (not "corrupt checkpoint"), a checkpoint file as --init
// (not "safetensors: malformed header").
func TestWrongKindOfFile(t *testing.T) {
	dir, file := evalFixture(t)
	other := t.TempDir()
	empty := filepath.Join(other, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.Latest()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	weights := filepath.Join(other, "w.safetensors")
	if err := checkpoint.Export(weights, c, true); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(other, "run")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "--config", empty, "--out", fresh}, empty + " is empty: a run config names at least its preset (preset: NAME; celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist) and the fields it changes; to train a preset as it is, give --preset NAME without --config"},
		{[]string{"local", "--config", file, "--out", fresh}, file + ": not a YAML run config (looks like a bbolt checkpoint file)"},
		{[]string{"local", "--config", weights, "--out", fresh}, weights + ": not a YAML run config (looks like a safetensors weights file)"},
		{[]string{"trainer", "--standalone", "--data-dir", fresh, "--config", file}, file + ": not a YAML run config (looks like a bbolt checkpoint file)"},
		{[]string{"local", "--init", file, "--steps", "100", "--out", fresh},
			"--init " + file + " is a bbolt checkpoint file, not safetensors weights; write its weights with: ddpm checkpoint export " + file + " --ema --out W.safetensors"},
		{[]string{"trainer", "--standalone", "--data-dir", fresh, "--preset", "mnist", "--init", file},
			"--init " + file + " is a bbolt checkpoint file, not safetensors weights; write its weights with: ddpm checkpoint export " + file + " --ema --out W.safetensors"},
		{[]string{"sample", "--checkpoint", weights, "--out", filepath.Join(other, "x.png")},
			"--checkpoint " + weights + " is a safetensors weights file, not a checkpoint file (checkpoints.db); --init of ddpm local and ddpm trainer takes weights"},
		{[]string{"eval", "bpd", "--checkpoint", weights},
			"--checkpoint " + weights + " is a safetensors weights file, not a checkpoint file (checkpoints.db); --init of ddpm local and ddpm trainer takes weights"},
		{[]string{"checkpoint", "export", weights, "--out", filepath.Join(other, "y.safetensors")},
			weights + " is a safetensors weights file, not a checkpoint file (checkpoints.db); --init of ddpm local and ddpm trainer takes weights"},
		{[]string{"checkpoint", "list", filepath.Join(dir, trainer.ConfigFile)},
			filepath.Join(dir, trainer.ConfigFile) + " is a YAML run config, not a checkpoint file; give the checkpoints.db of its run (or the run's folder)"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	for _, p := range []string{fresh, filepath.Join(other, "x.png"), filepath.Join(other, "y.safetensors")} {
		mustNotExist(t, p)
	}
}
