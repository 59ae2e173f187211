package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// TestLocalEMAWarning: a from-scratch run of the mnist preset's EMA (0.999) over 300 steps
// still holds 0.999^300 = 74% of the initialization; the warning gives the numbers and the ways
// out. A long enough run, a smaller decay and a warm start (--init) get none.
func TestLocalEMAWarning(t *testing.T) {
	want := "ddpm local: warning: the EMA (ema_decay 0.999) still holds 74% of the random initialization at step 300, the run's end (0.999^300), so samples.png will be mostly noise; give --ema-decay 0.99 (5% at step 300), train about 2302 steps (0.999^2302 is under 10%), sample the raw parameters afterwards (ddpm sample --checkpoint RUN --raw), or warm-start with --init as make demo does"
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

// TestSampleEMAWarningInitRun: the checkpoint of a ddpm local run started with --init resolves
// to RUN/trainer-0/checkpoints.db with the run.yaml its trainer wrote beside it, while local.json
// (which names the --init weights) lies in RUN: sample looked for local.json only beside the
// run.yaml it used, found none and warned that the EMA was mostly a random start. A run folder
// whose local.json names no --init still gets the warning.
func TestSampleEMAWarningInitRun(t *testing.T) {
	warning := "ddpm sample: warning: the EMA weights of step 0 (ema_decay 0.999) still hold 100% of the step-0 weights (0.999^0); from a random start they draw mostly noise: give --raw to sample the raw parameters\n"
	for _, init := range []string{"demo/mnist-tiny.safetensors", ""} {
		dir, file := evalFixture(t)
		cfg, err := os.ReadFile(filepath.Join(dir, trainer.ConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(file), trainer.ConfigFile), cfg, 0o644); err != nil {
			t.Fatal(err)
		}
		man := localrun.Manifest{ConfigHash: "x", Coordinators: 1, Trainers: 1, Init: init,
			CoordinatorPorts: []localrun.CoordinatorPorts{{Raft: 1, GRPC: 2, HTTP: 3}}, TrainerPorts: []localrun.TrainerPorts{{Listen: 4, HTTP: 5}}}
		if err := localrun.WriteManifest(dir, man); err != nil {
			t.Fatal(err)
		}
		args := []string{"sample", "--checkpoint", dir, "--n", "1", "--out", filepath.Join(t.TempDir(), "x.png")}
		var stderr bytes.Buffer
		if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
			t.Fatal(err)
		}
		want := map[string]int{"": 1}[init]
		if n := strings.Count(stderr.String(), warning); n != want {
			t.Errorf("--init %q: the warning %d times, want %d, in:\n%s", init, n, want, stderr.String())
		}
		if done := "ddpm sample: 1 sample of " + file + " step 0 (EMA) in "; !strings.Contains(stderr.String(), done) {
			t.Errorf("no %q in:\n%s", done, stderr.String())
		}
	}
	for _, tc := range []struct {
		lo, b, n int
		want     string
	}{{0, 1, 1, "image 1 of 1"}, {64, 1, 65, "image 65 of 65"}, {0, 64, 100, "images 1-64 of 100"}} {
		if got := imageRange(tc.lo, tc.b, tc.n); got != tc.want {
			t.Errorf("imageRange(%d, %d, %d) = %q, want %q", tc.lo, tc.b, tc.n, got, tc.want)
		}
	}
}
