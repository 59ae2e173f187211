package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/dataset"
	"ddpm/trainer"
)

// TestEvalBPDGreyFolderThreeChannelModel: eval bpd reads a folder of greyscale images with the
// checkpoint's model's channels: a run of the 3-channel small model on it (its run.yaml's
// dataset, or --data) is evaluated on the grey level in three planes. It opened the folder as
// one channel and refused it ("has 1x32x32 images, the checkpoint's model small wants 3x32x32").
func TestEvalBPDGreyFolderThreeChannelModel(t *testing.T) {
	grey := filepath.Join(t.TempDir(), "gray32")
	writeImages(t, grey, 2, 32, true)
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Model, run.T, run.Dataset = "small", fixtureT, grey
	ds, err := dataset.Open(grey, dataset.Options{Channels: 3})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trainer.New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(filepath.Join(dir, "trainer-0", trainer.CheckpointFile), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(tr.Snapshot(0, "")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, extra := range [][]string{nil, {"--data", grey}} {
		args := append([]string{"eval", "bpd", "--checkpoint", dir, "--batch", "2"}, extra...)
		out, err := runCLI(t, context.Background(), &bytes.Buffer{}, args...)
		if err != nil {
			t.Fatalf("ddpm %s: %v", strings.Join(args, " "), err)
		}
		want := ", folder/gray32 all images (an image folder has no test split), 2 images, T=20\n"
		if first := strings.SplitAfter(out, "\n")[0]; !strings.HasSuffix(first, want) {
			t.Fatalf("ddpm %s:\n%s\nwant a first line ending %q", strings.Join(args, " "), out, want)
		}
	}
}
