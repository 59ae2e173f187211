package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/trainer"
)

// TestEvalBPDOneSplitData: eval bpd of a run trained on a folder ddpm dataset prepare made from
// Fashion-MNIST's train split (a new user's `ddpm local --data PREPARED`) asks for the test
// split by default; the folder holds only the train split. It said "unsupported option: DIR:
// holds the train split, test asked", with no way out; the line now names the run's dataset,
// its split and source, and the two ways out, exit 2. --data of an idx file named train-*
// gets the same line about --data.
func TestEvalBPDOneSplitData(t *testing.T) {
	dir, _ := evalFixture(t)
	prep := filepath.Join(t.TempDir(), "fm")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", "fashion-mnist", "--out", prep); err != nil {
		t.Fatal(err)
	}
	run := fixtureRun
	run.Dataset = prep
	if err := os.WriteFile(filepath.Join(dir, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "the run's dataset "+prep+" holds only the train split (fashion-mnist/train): give --data fashion-mnist:test for the test split, or --split train to evaluate its own images")

	// An idx images file of the train split of a set of one's own: no built-in source to name.
	idx := filepath.Join(t.TempDir(), "train-images-idx3-ubyte")
	hdr := []byte{0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28}
	if err := os.WriteFile(idx, append(hdr, make([]byte, 2*28*28)...), 0o644); err != nil {
		t.Fatal(err)
	}
	args = []string{"eval", "bpd", "--checkpoint", dir, "--data", idx, "--n", "2", "--batch", "2"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--data "+idx+" holds only the train split (idx/train-images-idx3-ubyte): give --data the test split of the data it came from, or --split train to evaluate its own images")
}
