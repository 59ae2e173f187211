package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestSampleInterpolateDefaultT: --interpolate without --interpolate-t diffuses both images to
// t = T/2 (the paper's 500 of T = 1000); on a run of another T (the fixture's T = 20) the fixed
// default 500 used to refuse every such command ("--interpolate-t 500: want 0..19") although
// the user had given no --interpolate-t. An explicit value outside 0..T-1 is still refused.
func TestSampleInterpolateDefaultT(t *testing.T) {
	dir, _ := evalFixture(t)
	tmp := t.TempDir()
	writeImages(t, tmp, 2, 32, true)
	names := []string{filepath.Join(tmp, "000.png"), filepath.Join(tmp, "001.png")}
	out := filepath.Join(tmp, "row.png")
	args := []string{"sample", "--checkpoint", dir, "--out", out, "--interpolate", names[0] + "," + names[1], "--lambda-steps", "2"}
	var stderr bytes.Buffer
	if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
		t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	want := fmt.Sprintf("ddpm sample: interpolation %s -> %s at t=%d, 3 weights -> %s\n", names[0], names[1], fixtureT/2, out)
	if !strings.HasSuffix(stderr.String(), want) {
		t.Fatalf("ddpm %s:\n%s\nwant it to end with\n%s", strings.Join(args, " "), stderr.String(), want)
	}
	bad := filepath.Join(tmp, "bad.png")
	args = []string{"sample", "--checkpoint", dir, "--out", bad, "--interpolate", names[0] + "," + names[1], "--interpolate-t", "20"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, fmt.Sprintf("--interpolate-t 20: want 0..%d", fixtureT-1))
	mustNotExist(t, bad)
}

// TestSampleProgressiveDefaultEvery: --progressive without --every records the chain every T/10
// steps (the former fixed 100 of T = 1000); on a run of T <= 100 (the fixture's T = 20) the
// fixed default used to refuse every such command ("--every 100: want 1..20").
func TestSampleProgressiveDefaultEvery(t *testing.T) {
	dir, file := evalFixture(t)
	tmp := t.TempDir()
	out, prog := filepath.Join(tmp, "x.png"), filepath.Join(tmp, "p.png")
	args := []string{"sample", "--checkpoint", dir, "--n", "2", "--out", out, "--progressive", prog}
	var stderr bytes.Buffer
	if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
		t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	want := fmt.Sprintf("ddpm sample: 2 samples of %s step 0 (EMA) in ", file)
	tail := fmt.Sprintf(" -> %s; their predicted x0 every %d steps -> %s\n", out, fixtureT/10, prog)
	if lines := strings.Split(strings.TrimSpace(stderr.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], want) || !strings.HasSuffix(stderr.String(), tail) {
		t.Fatalf("ddpm %s:\n%s\nwant a last line %q...%q", strings.Join(args, " "), stderr.String(), want, tail)
	}
}
