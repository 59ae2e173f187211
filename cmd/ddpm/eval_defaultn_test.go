package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestEvalBPDDefaultNSmallSet: without --n, eval bpd evaluates up to 1000 images, all of a
// smaller set (here a greyscale folder of 3 images, which the 1-channel model takes); it used to
// refuse every set under 1000 images unless --n was given ("--n 1000: dataset folder/imgs holds
// 3 images"). An explicit --n beyond the set is still refused, exit 2.
func TestEvalBPDDefaultNSmallSet(t *testing.T) {
	dir, _ := evalFixture(t)
	imgs := filepath.Join(t.TempDir(), "imgs")
	writeImages(t, imgs, 3, 32, true)
	args := []string{"eval", "bpd", "--checkpoint", dir, "--data", imgs, "--batch", "3"}
	out, err := runCLI(t, context.Background(), &bytes.Buffer{}, args...)
	if err != nil {
		t.Fatalf("ddpm %s: %v", strings.Join(args, " "), err)
	}
	want := ", folder/imgs all images (an image folder has no test split), 3 images, T=20\n"
	if first := strings.SplitAfter(out, "\n")[0]; !strings.HasSuffix(first, want) {
		t.Fatalf("ddpm %s:\n%s\nwant a first line ending %q", strings.Join(args, " "), out, want)
	}
	args = append(args, "--n", "4")
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--n 4: dataset folder/imgs holds 3 images")
}
