package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ddpm/dataset"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerGreyFolderThreeChannelModel: a trainer reads a folder of greyscale images with its
// model's channels: a 3-channel model (small) trains on it, the grey level in three planes, with
// the fingerprint of that reading (pinned here, as runs of such a model pinned it before grey
// folders opened as one channel). It opened the folder as 1x32x32 and exited 2 on the model's
// 3x32x32.
func TestTrainerGreyFolderThreeChannelModel(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	grey := filepath.Join(root, "gray32")
	writeImages(t, grey, 8, 32, true)
	ds, err := dataset.Open(grey, dataset.Options{Channels: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 3 {
		t.Fatalf("grey folder opened with Channels 3: %d channels", c)
	}
	vol := filepath.Join(root, "vol")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--standalone", "--data-dir", vol, "--dataset", grey, "--preset", "mnist",
		"--model", "small", "--dataset-fingerprint", ds.Fingerprint(), "--steps", "1", "--checkpoint-every", "1", "--global-batch", "4")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("trainer --standalone --model small on a greyscale folder: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(vol, trainer.CheckpointFile)); err != nil {
		t.Errorf("no checkpoint file after the run: %v", err)
	}
}
