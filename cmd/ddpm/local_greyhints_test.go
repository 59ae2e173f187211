package main

import (
	"context"
	"path/filepath"
	"testing"

	"ddpm/config"
)

// TestLocalGreyFolderHints: the lines ddpm local prints about a folder of greyscale images take
// the 3-channel models into account, which read such a folder as its grey level in three planes.
// Without --preset the presets listed include cifar10 (they were only the 1-channel ones). The
// copy at the model's size that a 3-channel model is told to make is prepared with --channels 3:
// without it the prepared copy held 1x32x32 images, which the same model then refused; the
// prepared copy made as told passes the check, and a 1-channel copy is told to be prepared again
// with --channels 3. A test split is named as typed (a relative
// grey:test read as the absolute path).
func TestLocalGreyFolderHints(t *testing.T) {
	root := t.TempDir()
	grey, grey28 := filepath.Join(root, "grey"), filepath.Join(root, "grey28")
	writeImages(t, grey, 2, 32, true)
	writeImages(t, grey28, 2, 28, true)
	fresh := filepath.Join(root, "fresh")

	args := []string{"local", "--data", grey, "--out", fresh}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--data "+grey+" holds 1x32x32 images (folder/grey) of no one preset; give --preset NAME too "+
		"(the presets whose model takes 1x32x32 images, or 3x32x32 as the grey level in three channels: cifar10, fashion-mnist, mnist)")
	mustNotExist(t, fresh)

	args = []string{"local", "--data", grey28, "--preset", "cifar10", "--out", fresh}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "dataset "+grey28+` has 3x28x28 images (greyscale, the grey level in three channels), model "cifar10" wants 3x32x32 (RGB); make a copy at 32x32 with: `+
		"ddpm dataset prepare "+grey28+" --resolution 32 --channels 3 --out DIR, and train on DIR")
	mustNotExist(t, fresh)

	// The copy made as told is what the model takes.
	prep := filepath.Join(root, "prep")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", grey28, "--resolution", "32", "--channels", "3", "--out", prep); err != nil {
		t.Fatalf("dataset prepare: %v", err)
	}
	run, err := config.Preset("cifar10")
	if err != nil {
		t.Fatal(err)
	}
	run.Dataset = prep
	if err := checkDataset(run, fresh); err != nil {
		t.Errorf("checkDataset of the copy prepared as told: %v", err)
	}

	// A copy prepared without --channels 3 holds one channel: the way out is named.
	prep1 := filepath.Join(root, "prep1")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", grey, "--out", prep1); err != nil {
		t.Fatalf("dataset prepare: %v", err)
	}
	run.Dataset = prep1
	if err := checkDataset(run, fresh); err == nil || err.Error() != "dataset "+prep1+` has 1x32x32 images (greyscale), model "cifar10" wants 3x32x32 (RGB); `+
		"the models for 1x32x32 images: tiny (--model); a copy prepared from a folder of greyscale images: prepare it again with --channels 3" {
		t.Errorf("checkDataset of a 1-channel copy for model cifar10: %v", err)
	}

	// A 1-channel copy of other data (Fashion-MNIST at 32x32) is not told about --channels.
	prepF := filepath.Join(root, "prepf")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", "fashion-mnist", "--resolution", "32", "--out", prepF); err != nil {
		t.Fatalf("dataset prepare fashion-mnist: %v", err)
	}
	run.Dataset = prepF
	if err := checkDataset(run, fresh); err == nil || err.Error() != "dataset "+prepF+` has 1x32x32 images (greyscale), model "cifar10" wants 3x32x32 (RGB); `+
		"the models for 1x32x32 images: tiny (--model)" {
		t.Errorf("checkDataset of a 1-channel Fashion-MNIST copy for model cifar10: %v", err)
	}

	// A relative test split is named as typed, with or without --preset.
	t.Chdir(root)
	for _, args := range [][]string{
		{"local", "--data", "grey:test", "--preset", "mnist", "--out", fresh},
		{"local", "--data", "grey:test", "--out", fresh},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "dataset grey:test names the test split; a run trains on the train split: give grey")
	}
	mustNotExist(t, fresh)
}
