package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
)

// TestFashionMNISTPresetTrains: the fashion-mnist preset's dataset opens as the idx dataset
// (Debian's dataset-fashion-mnist) and `ddpm local --data fashion-mnist` trains to its end; the
// preset named Debian's folder of .gz idx files, which was opened as an image folder and refused
// ("no .png/.jpg/.jpeg/.webp files").
func TestFashionMNISTPresetTrains(t *testing.T) {
	run, err := config.Preset("fashion-mnist")
	if err != nil {
		t.Fatal(err)
	}
	if err := checkDataset(run, ""); err != nil {
		t.Fatalf("preset fashion-mnist (dataset %q): %v", run.Dataset, err)
	}
	// Debian's folder itself, as a user may name it with --dataset.
	run.Dataset = "/usr/share/datasets/fashion-mnist"
	if err := checkDataset(run, ""); err != nil {
		t.Fatalf("dataset %s: %v", run.Dataset, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := filepath.Join(t.TempDir(), "F")
	cmd := exec.CommandContext(ctx, testutil.DDPMBinary(t), "local", "--data", "fashion-mnist", "--trainers", "1",
		"--coordinators", "1", "--steps", "4", "--checkpoint-every", "2", "--samples", "0", "--quiet", "--out", out)
	b, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "ddpm local: done: "+out+"; final loss ") ||
		!strings.Contains(string(b), "4 steps of global batch 32, model tiny, data fashion-mnist") {
		t.Fatalf("ddpm local --data fashion-mnist: %v\n%s", err, b)
	}
}
