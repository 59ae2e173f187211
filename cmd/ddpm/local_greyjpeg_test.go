package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/dataset"
)

// TestLocalGreyJPEGFolder: a folder of grey 32x32 images saved as colour JPEGs (three
// components of chroma 128, as ImageMagick's -type TrueColor or Go's encoder given R = G = B
// writes them) trains the mnist preset's 1-channel tiny U-Net (2 steps, real processes); the old
// code read it as 3x32x32 and refused ("dataset D has 3x32x32 images (RGB), model "tiny" wants
// 1x32x32 (greyscale); ..."). A run of a 3-channel model on that folder, as every release before
// could start one, pins the fingerprint of the decoded RGB planes (here: of a lossless RGB PNG
// copy of the decoded pixels, opened with Channels 3); resumed by this release, its trainers read those same bytes and
// the run finishes (a trainer reading other bytes exits 2: "dataset ... has fingerprint ..., the
// run pins ...").
func TestLocalGreyJPEGFolder(t *testing.T) {
	root := t.TempDir()
	jpegs, pngs := filepath.Join(root, "jpegs"), filepath.Join(root, "pngs")
	for _, d := range []string{jpegs, pngs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 8; i++ {
		img := image.NewRGBA(image.Rect(0, 0, 32, 32))
		for k := 0; k < 32*32; k++ {
			v := uint8(k*7 + i*31)
			img.SetRGBA(k%32, k/32, color.RGBA{v, v, v, 255})
		}
		var b bytes.Buffer
		if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(jpegs, fmt.Sprintf("%03d.jpg", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		dec, err := jpeg.Decode(bytes.NewReader(b.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		rgb := image.NewNRGBA(dec.Bounds()) // a PNG of colour type 2 (R = G = B): read as RGB with --channels 3
		draw.Draw(rgb, rgb.Bounds(), dec, image.Point{}, draw.Src)
		b.Reset()
		if err := png.Encode(&b, rgb); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pngs, fmt.Sprintf("%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	run := filepath.Join(root, "run")
	r := runLocalCmd(t, "--data", jpegs, "--preset", "mnist", "--trainers", "1", "--coordinators", "1", "--steps", "2", "--checkpoint-every", "1",
		"--samples", "0", "--global-batch", "4", "--max-trainers", "1", "--quiet", "--out", run)
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+run+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("grey JPEG folder, model tiny: exit %d\n%s", r.code, r.out)
	}

	rgb, err := dataset.Open(pngs, dataset.Options{Channels: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := rgb.Shape(); c != 3 {
		t.Fatalf("the RGB PNG copy opens with %d channels, want 3", c)
	}
	old := makeLocalRun(t, 1, func(r *config.Run) {
		r.Dataset, r.Model, r.DatasetFingerprint = jpegs, "small", rgb.Fingerprint()
		r.Steps, r.CheckpointEvery, r.GlobalBatch = 2, 1, 4
	})
	r = runLocalCmd(t, "--resume", old, "--quiet")
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+old+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("a 3-channel run pinned to the decoded RGB planes, resumed: exit %d\n%s", r.code, r.out)
	}
}
