package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/dataset"
	"ddpm/trainer"
)

// TestEvalBPDImageFolderNoTestSplit: eval bpd of a run trained on an image folder evaluates the
// folder's images by default and says "all images (an image folder has no test split)" where it
// names the split; --split test is refused in one line. It printed "folder/NAME test" over the
// training images.
func TestEvalBPDImageFolderNoTestSplit(t *testing.T) {
	tmp := t.TempDir()
	imgs := filepath.Join(tmp, "faces")
	if err := os.Mkdir(imgs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a.png", "b.png"} {
		img := image.NewRGBA(image.Rect(0, 0, 32, 32))
		for y := range 32 {
			for x := range 32 {
				img.Set(x, y, color.RGBA{uint8(8*x + i*40), uint8(8 * y), uint8(100 * i), 255})
			}
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(imgs, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Model, run.Dataset, run.T = "small", imgs, fixtureT
	ds, err := dataset.Open(run.Dataset, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trainer.New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "run")
	if err := os.MkdirAll(filepath.Join(dir, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "trainer-0", trainer.CheckpointFile)
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Save(tr.Snapshot(0, ""))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	out, err := runCLI(t, context.Background(), nil, "eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2")
	if err != nil {
		t.Fatal(err)
	}
	want := "checkpoint " + file + " step 0 (EMA), folder/faces all images (an image folder has no test split), 2 images, T=20\n"
	if first, _, _ := strings.Cut(out, "\n"); first+"\n" != want {
		t.Errorf("eval bpd output begins %q, want %q", first, want)
	}
	// The ± is the standard error of the mean (sample deviation); one image has none.
	if lines := strings.Split(out, "\n"); len(lines) < 2 || !strings.HasPrefix(lines[1], "total bits/dim  ") ||
		!strings.HasSuffix(lines[1], " (standard error of the mean over 2 images)") {
		t.Errorf("eval bpd total line: %q", out)
	}
	out, err = runCLI(t, context.Background(), nil, "eval", "bpd", "--checkpoint", dir, "--n", "1", "--batch", "1")
	if lines := strings.Split(out, "\n"); err != nil || len(lines) < 2 ||
		!strings.HasSuffix(lines[1], " (one image: no standard error; give --n 2 or more)") || strings.Contains(lines[1], "±") {
		t.Errorf("eval bpd --n 1: %v %q", err, out)
	}
	// One image is "1 image" (it said "1 images").
	if want := "checkpoint " + file + " step 0 (EMA), folder/faces all images (an image folder has no test split), 1 image, T=20\n"; !strings.HasPrefix(out, want) {
		t.Errorf("eval bpd --n 1 output begins %q, want %q", out, want)
	}
	noSplit := "unsupported option: " + imgs + ": an image folder has no test split (all its images are one set; give no split)"
	for _, args := range [][]string{
		{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--split", "test"},
		{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--data", imgs + ":test"},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, noSplit)
	}

	// A copy ddpm dataset prepare made of the folder (a new user's way to resize one) has no
	// test split either: eval said "folder/faces test" over its images.
	prep := filepath.Join(tmp, "faces-prepared")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", imgs, "--out", prep); err != nil {
		t.Fatal(err)
	}
	out, err = runCLI(t, context.Background(), nil, "eval", "bpd", "--checkpoint", dir, "--data", prep, "--n", "2", "--batch", "2")
	want = "checkpoint " + file + " step 0 (EMA), folder/faces all images (a prepared folder has no test split), 2 images, T=20\n"
	if first, _, _ := strings.Cut(out, "\n"); err != nil || first+"\n" != want {
		t.Errorf("eval bpd of a prepared folder: %v, output begins %q, want %q", err, first, want)
	}
	args := []string{"eval", "bpd", "--checkpoint", dir, "--data", prep, "--n", "2", "--split", "test"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "unsupported option: "+prep+": a prepared copy of an image folder has no test split (all its images are one set; give no split)")
}
