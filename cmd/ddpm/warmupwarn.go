package main

import (
	"fmt"

	"ddpm/optim"
)

// localWarmupWarning is ddpm local's one-line warning for a run that ends before half its
// learning-rate warmup (its last step's rate below half the peak), or "" when the run gets
// further (or there is no warmup): a warmup a little longer than the run still ends near the
// peak, and the model learns. The linear warmup
// (optim.WarmupLR: lr * s/warmup_steps at Adam's step s, counted from 0) of a preset meant for
// long runs, cifar10's 5000 steps, keeps a 50-step run's learning rate at a hundredth of its
// peak, and the run learns next to nothing without a word:
//
//	ddpm local: warning: warmup_steps 5000 is longer than the run (50 steps): the learning rate rises only to 1.96e-06 by the last step, 1% of lr 0.0002, so the model will learn little; give --warmup-steps 5 (a tenth of the run) or fewer
func localWarmupWarning(steps, warmup int64, lr float64) string {
	if warmup <= steps || steps <= 0 {
		return ""
	}
	last := optim.WarmupLR(steps-1, lr, warmup)
	if last >= lr/2 {
		return ""
	}
	return fmt.Sprintf("ddpm local: warning: warmup_steps %d is longer than the run (%d steps): the learning rate rises only to %.3g by the last step, %.0f%% of lr %g, so the model will learn little; give --warmup-steps %d (a tenth of the run) or fewer",
		warmup, steps, last, 100*last/lr, lr, max(steps/10, 1))
}
