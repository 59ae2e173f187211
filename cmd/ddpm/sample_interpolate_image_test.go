package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestInterpolateNotAnImage: an --interpolate file that is no image (a run.yaml given by
// mistake) is refused naming it and the formats taken, PNG, JPEG and WebP (a WebP pair was
// read, yet the line said "not a PNG or JPEG image"); nothing is written.
func TestInterpolateNotAnImage(t *testing.T) {
	dir, _ := evalFixture(t)
	yaml := filepath.Join(dir, "run.yaml")
	out := filepath.Join(t.TempDir(), "row.png")
	args := []string{"sample", "--checkpoint", dir, "--out", out, "--interpolate", yaml + "," + yaml, "--interpolate-t", "5"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--interpolate image "+yaml+": not a PNG, JPEG or WebP image (image: unknown format)")
	mustNotExist(t, out)

	out2, _ := runCLI(t, context.Background(), nil, "sample", "--help")
	const line = "      --interpolate strings     two images A.png,B.png (PNG, JPEG or WebP, of the model's size) to interpolate between (paper Fig. 8)\n"
	if !strings.Contains(out2, line) {
		t.Errorf("sample --help lacks %q:\n%s", line, out2)
	}
}
