package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalEMAWarning: a from-scratch run of the mnist preset's EMA (0.999) over 300 steps
// still holds 0.999^300 = 74% of the initialization; the warning gives the numbers and the ways
// out. A long enough run, a smaller decay and a warm start (--init) get none.
func TestLocalEMAWarning(t *testing.T) {
	want := "ddpm local: warning: the EMA (ema_decay 0.999) still holds 74% of the random initialization at step 300, the run's end (0.999^300), so samples.png will be mostly noise; give --ema-decay 0.99 (5% at step 300), train about 2302 steps, sample the raw parameters afterwards (ddpm sample --checkpoint RUN --raw), or warm-start with --init as make demo does"
	if got := localEMAWarning(0.999, 300, ""); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for _, tc := range []struct {
		decay float64
		steps int64
		init  string
	}{{0.999, 2302, ""}, {0.99, 300, ""}, {0.999, 200, "demo/mnist-tiny.safetensors"}, {0, 10, ""}} {
		if got := localEMAWarning(tc.decay, tc.steps, tc.init); got != "" {
			t.Errorf("%+v: %q, want no warning", tc, got)
		}
	}
}

// TestSampleEMAWarning: ddpm sample of the EMA weights of a step-0 checkpoint (all
// initialization) warns once on stderr and names --raw; with --raw it does not.
func TestSampleEMAWarning(t *testing.T) {
	dir, _ := evalFixture(t)
	out := filepath.Join(t.TempDir(), "x.png")
	want := "ddpm sample: warning: the EMA weights of step 0 (ema_decay 0.999) still hold 100% of the step-0 weights (0.999^0); from a random start they draw mostly noise: give --raw to sample the raw parameters\n"
	for _, raw := range []bool{false, true} {
		args := []string{"sample", "--checkpoint", dir, "--n", "1", "--out", out, "--force"}
		if raw {
			args = append(args, "--raw")
		}
		var stderr bytes.Buffer
		if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(stderr.String(), want); n != map[bool]int{false: 1, true: 0}[raw] {
			t.Errorf("ddpm %s: the warning %d times in:\n%s", strings.Join(args, " "), n, stderr.String())
		}
	}
}
