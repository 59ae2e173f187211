package main

import (
	"context"
	"path/filepath"
	"testing"
)

// TestImageGivenAsWeightsOrCheckpoint: a PNG given to --init or --checkpoint (a slip among a
// folder of images and a run folder) is named as an image in one line, exit 2, nothing written.
// --init said "is not weights of model "tiny": ... safetensors: malformed header: header length
// 727905341920923785 exceeds the limit", and --checkpoint advised copying a run.yaml into the
// image folder.
func TestImageGivenAsWeightsOrCheckpoint(t *testing.T) {
	imgs := filepath.Join(t.TempDir(), "imgs")
	writeImages(t, imgs, 1, 32, true)
	img := filepath.Join(imgs, "000.png")
	fresh, out := filepath.Join(t.TempDir(), "fresh"), filepath.Join(t.TempDir(), "x.png")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "--init", img, "--steps", "4", "--checkpoint-every", "2", "--out", fresh},
			"--init " + img + " is an image (PNG, JPEG or WebP), not safetensors weights"},
		{[]string{"sample", "--checkpoint", img, "--out", out},
			"--checkpoint " + img + " is an image (PNG, JPEG or WebP), not a checkpoint file (checkpoints.db)"},
		{[]string{"eval", "bpd", "--checkpoint", img},
			"--checkpoint " + img + " is an image (PNG, JPEG or WebP), not a checkpoint file (checkpoints.db)"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	mustNotExist(t, fresh)
	mustNotExist(t, out)
}
