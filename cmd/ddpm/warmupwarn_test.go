package main

import (
	"strings"
	"testing"
)

// A preset's warmup longer than a short run keeps the learning rate near zero for the whole run;
// ddpm local says so with the numbers (found by a new user: cifar10's 5000 warmup steps on a
// 50-step run ended at lr 1.96e-06 and loss 0.99).
func TestLocalWarmupWarning(t *testing.T) {
	for _, c := range []struct {
		steps, warmup int64
		lr            float64
		want          string
	}{
		{50, 5000, 2e-4, "ddpm local: warning: warmup_steps 5000 is longer than the run (50 steps): the learning rate rises only to 1.96e-06 by the last step, 1% of lr 0.0002, so the model will learn little; give --warmup-steps 5 (a tenth of the run) or fewer"},
		{5, 200, 1e-3, "ddpm local: warning: warmup_steps 200 is longer than the run (5 steps): the learning rate rises only to 2e-05 by the last step, 2% of lr 0.001, so the model will learn little; give --warmup-steps 1 (a tenth of the run) or fewer"},
		{200, 200, 2e-4, ""}, // the warmup ends with the run: its last steps train at about the peak
		{200, 201, 2e-4, ""}, // the last step at 99% of the peak: it was told it would learn little
		{200, 398, 2e-4, ""}, // the last step at half the peak
		{200, 400, 2e-4, "ddpm local: warning: warmup_steps 400 is longer than the run (200 steps): the learning rate rises only to 9.95e-05 by the last step, 50% of lr 0.0002, so the model will learn little; give --warmup-steps 20 (a tenth of the run) or fewer"},
		{200, 50, 2e-4, ""}, // make demo
		{50, 0, 2e-4, ""},   // no warmup
	} {
		if got := localWarmupWarning(c.steps, c.warmup, c.lr); got != c.want {
			t.Errorf("localWarmupWarning(%d, %d, %g):\n got %q\nwant %q", c.steps, c.warmup, c.lr, got, c.want)
		}
	}
}

// TestLocalResumeNoWarmupAdvice: a resumed run whose warmup is longer than the run (mnist's 200
// warmup steps, 4 steps) is not told to give --warmup-steps, which --resume refuses; the
// warning came at the run's start.
func TestLocalResumeNoWarmupAdvice(t *testing.T) {
	run := makeLocalRun(t, 1, nil)
	r := runLocalCmd(t, "--resume", run, "--quiet")
	if r.code != 0 || strings.Contains(r.out, "warmup") {
		t.Fatalf("exit %d with\n%s\nwant exit 0 and no warmup warning", r.code, r.out)
	}
}
