package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
)

// TestLocalGreyRGBPNGFolder: a folder of grey 32x32 images saved as RGB PNGs (colour type 2,
// R = G = B, as many editors write a grey image in colour mode) trains the mnist preset's
// 1-channel tiny U-Net (2 steps, real processes); the old code read it as 3x32x32 and refused
// ("dataset D has 3x32x32 images (RGB), model "tiny" wants 1x32x32 (greyscale); ..."). A run of
// a 3-channel model on that folder, as every release before could start one, pinned the
// fingerprint the old code printed for it (`ddpm dataset inspect` of the release before this
// change, on these pixels: a PNG decodes to them exactly); resumed by this release, its trainers
// read those same bytes (--channels 3) and the run finishes.
func TestLocalGreyRGBPNGFolder(t *testing.T) {
	const oldFingerprint = "8473856e48554cf79c5675446d9ade7cc424b8b7ad1cdf78579fcb863933864b"
	root := t.TempDir()
	dir := filepath.Join(root, "rgbgrey")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		img := image.NewRGBA(image.Rect(0, 0, 32, 32))
		for k := 0; k < 32*32; k++ {
			v := uint8(k*7 + i*31)
			img.SetRGBA(k%32, k/32, color.RGBA{v, v, v, 255})
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if b.Bytes()[25] != 2 {
			t.Fatalf("PNG of colour type %d, want 2 (RGB)", b.Bytes()[25])
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	run := filepath.Join(root, "run")
	r := runLocalCmd(t, "--data", dir, "--preset", "mnist", "--trainers", "1", "--coordinators", "1", "--steps", "2", "--checkpoint-every", "1",
		"--samples", "0", "--global-batch", "4", "--max-trainers", "1", "--quiet", "--out", run)
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+run+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("grey RGB PNG folder, model tiny: exit %d\n%s", r.code, r.out)
	}

	old := makeLocalRun(t, 1, func(r *config.Run) {
		r.Dataset, r.Model, r.DatasetFingerprint = dir, "small", oldFingerprint
		r.Steps, r.CheckpointEvery, r.GlobalBatch = 2, 1, 4
	})
	r = runLocalCmd(t, "--resume", old, "--quiet")
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+old+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("a 3-channel run pinned to the old fingerprint, resumed: exit %d\n%s", r.code, r.out)
	}
}
