package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"ddpm/checkpoint"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// The EMA of the parameters (ema <- decay*ema + (1-decay)*params after every step, starting
// from the step-0 parameters) still holds the share decay^s of its starting point after s
// steps: 0.999^300 = 0.74. From a random initialization such weights draw noise, whatever the
// raw parameters have learned. These warnings say so, with the numbers and the ways out.

// emaStaleShare is the share of the step-0 weights above which the EMA is called stale.
const emaStaleShare = 0.1

// emaInitShare is decay^steps, the weight of the step-0 parameters in the EMA after steps steps.
func emaInitShare(decay float64, steps int64) float64 { return math.Pow(decay, float64(steps)) }

// localEMAWarning is ddpm local's one-line warning for a run from a random start whose EMA
// still holds more than emaStaleShare of that start at the run's last step, or "" when it does
// not (or the run starts from --init weights, which the EMA starts from too):
//
//	ddpm local: warning: the EMA (ema_decay 0.999) still holds 74% of the random initialization at step 300, the run's end (0.999^300), so samples.png will be mostly noise; give --ema-decay 0.99 (5% at step 300), train about 2302 steps (0.999^2302 is under 10%), sample the raw parameters afterwards (ddpm sample --checkpoint RUN --raw), or warm-start with --init as make demo does
func localEMAWarning(decay float64, steps int64, init string) string {
	share := emaInitShare(decay, steps)
	if init != "" || share <= emaStaleShare || decay <= 0 {
		return ""
	}
	// A decay whose EMA holds at most 5% of the start at the end, rounded down to 3 decimals.
	lower := math.Floor(math.Pow(0.05, 1/float64(steps))*1000) / 1000
	need := int64(math.Ceil(math.Log(emaStaleShare) / math.Log(decay)))
	return fmt.Sprintf("ddpm local: warning: the EMA (ema_decay %g) still holds %.0f%% of the random initialization at step %d, the run's end (%g^%d), so samples.png will be mostly noise; give --ema-decay %g (%.0f%% at step %d), train about %d steps (%g^%d is under %.0f%%), sample the raw parameters afterwards (ddpm sample --checkpoint RUN --raw), or warm-start with --init as make demo does",
		decay, 100*share, steps, decay, steps, lower, 100*emaInitShare(lower, steps), steps, need, decay, need, 100*emaStaleShare)
}

// sampleEMAWarning is ddpm sample's one-line warning for EMA weights of a step at which they
// still hold more than emaStaleShare of the step-0 weights, or "" when those were --init
// weights, not a random start: the checkpoint records them (trainer.InitSHA256), on the volume
// of every trainer of the run, one that joined later without --init and fetched the run's
// checkpoint included; a checkpoint written before checkpoints recorded them is judged by its
// trainer's volume (trainer.InitFile: that trainer was given --init) or its ddpm local run
// (local.json names --init weights). file is the checkpoint file and cfgPath the run config it
// was resolved with: a ddpm local run folder keeps local.json beside its run.yaml and above its
// trainers' folders (RUN/trainer-0/checkpoints.db, whose own run.yaml the trainer wrote beside
// it), so both places are looked at.
func sampleEMAWarning(decay float64, step int64, file, cfgPath string) string {
	if !staleRandomEMA(decay, step, file, cfgPath) {
		return ""
	}
	return fmt.Sprintf("ddpm sample: warning: the EMA weights of step %d (ema_decay %g) still hold %.0f%% of the step-0 weights (%g^%d); from a random start they draw mostly noise: give --raw to sample the raw parameters",
		step, decay, 100*emaInitShare(decay, step), decay, step)
}

// evalEMAWarning is ddpm eval bpd's warning of the same case as sampleEMAWarning: the bound of
// such EMA weights is mostly that of the random start (a run of 60 steps measured 5.79 bits/dim
// on its EMA), which says little of what the run learned.
func evalEMAWarning(decay float64, step int64, file, cfgPath string) string {
	if !staleRandomEMA(decay, step, file, cfgPath) {
		return ""
	}
	return fmt.Sprintf("ddpm eval bpd: warning: the EMA weights of step %d (ema_decay %g) still hold %.0f%% of the step-0 weights (%g^%d); from a random start their bound is mostly the random start's: give --raw to evaluate the raw parameters",
		step, decay, 100*emaInitShare(decay, step), decay, step)
}

// staleRandomEMA reports whether the EMA weights of step still hold more than emaStaleShare of
// a random start (see sampleEMAWarning for how a warm start is told).
func staleRandomEMA(decay float64, step int64, file, cfgPath string) bool {
	if emaInitShare(decay, step) <= emaStaleShare {
		return false
	}
	if warmStarted(file, step) {
		return false
	}
	// A trainer given --init records the weights in its volume (trainer.InitFile).
	if _, err := os.Stat(filepath.Join(filepath.Dir(file), trainer.InitFile)); err == nil {
		return false
	}
	for _, dir := range []string{filepath.Dir(cfgPath), filepath.Dir(file), filepath.Dir(filepath.Dir(file))} {
		if m, err := localrun.ReadManifest(dir); err == nil {
			if m.Init != "" {
				return false
			}
			break // the run folder: a random start
		}
	}
	return true
}

// warmStarted reports whether checkpoint step of file records --init weights as its run's start
// (trainer.InitSHA256); false also when the file cannot be read (sample has read it a moment
// ago: the other records decide then).
func warmStarted(file string, step int64) bool {
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return false
	}
	defer st.Close()
	infos, err := st.List()
	if err != nil {
		return false
	}
	for _, in := range infos {
		if in.Step == step && in.Err == nil {
			return trainer.InitSHA256(in.RNG) != ""
		}
	}
	return false
}
