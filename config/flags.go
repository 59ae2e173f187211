package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Flags binds one command-line flag per Run field (same names as the YAML fields, with dashes:
// --global-batch, --checkpoint-every, ...) plus --config for a YAML file. Only the flags the
// user actually set override the file or preset; see Resolve.
type Flags struct {
	fs   *pflag.FlagSet
	v    Run
	hb   time.Duration
	Path string // --config: path of a YAML run config, "" for none
	// DefaultPreset is the preset that fills what a --config file leaves out when neither the
	// file's preset: nor --preset names one (ddpm local: the preset its --data names). A value
	// that is not a preset name is ignored.
	DefaultPreset string
}

// AddFlags registers the run-config flags on fs and returns the binding.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	v := &f.v
	fs.StringVar(&f.Path, "config", "", "run config YAML file (flags below override its fields)")
	fs.StringVar(&v.Preset, "preset", "", "dataset preset: cifar10, celebahq, lsun-church, lsun-bedroom, lsun-cat, mnist, fashion-mnist")
	fs.StringVar(&v.Model, "model", "", "U-Net preset: cifar10, lsun256, celebahq256, small, tiny")
	fs.StringVar(&v.Dataset, "dataset", "", "the run's dataset: mnist, fashion-mnist, or a path to CIFAR-10 / LSUN / an image folder / a prepared folder / idx files")
	fs.StringVar(&v.DatasetFingerprint, "dataset-fingerprint", "", "expected sha256 fingerprint of the dataset")
	fs.Uint64Var(&v.Seed, "seed", 0, "seed of every random stream of the run")
	fs.Int64Var(&v.Steps, "steps", 0, "total optimizer steps")
	fs.IntVar(&v.GlobalBatch, "global-batch", 0, "images per step across all trainers")
	fs.Float64Var(&v.LR, "lr", 0, "peak Adam learning rate")
	fs.Int64Var(&v.WarmupSteps, "warmup-steps", 0, "linear learning-rate warmup steps")
	fs.Float64Var(&v.GradClip, "grad-clip", 0, "global gradient-norm clip (0 disables)")
	fs.Float64Var(&v.EMADecay, "ema-decay", 0, "EMA decay of the parameters")
	fs.Float64Var(&v.Dropout, "dropout", 0, "U-Net dropout probability")
	fs.BoolVar(&v.Flip, "flip", false, "random horizontal flips")
	fs.IntVar(&v.T, "t", 0, "diffusion steps T")
	fs.StringVar(&v.BetaSchedule, "beta-schedule", "", "beta schedule: linear, quad, warmup10, warmup50, const, jsd")
	fs.Float64Var(&v.BetaStart, "beta-start", 0, "first beta")
	fs.Float64Var(&v.BetaEnd, "beta-end", 0, "last beta")
	fs.Int64Var(&v.CheckpointEvery, "checkpoint-every", 0, "coordinated checkpoint interval in steps")
	fs.IntVar(&v.KeepCheckpoints, "keep-checkpoints", 0, "committed checkpoints to keep")
	fs.IntVar(&v.MinTrainers, "min-trainers", 0, "smallest world size a generation may start with")
	fs.IntVar(&v.MaxTrainers, "max-trainers", 0, "largest world size")
	fs.DurationVar(&f.hb, "heartbeat-timeout", 0, "remove a trainer after this long without a heartbeat")
	return f
}

// Given reports whether the user supplied any run-config flag or --config.
func (f *Flags) Given() bool {
	given := false
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if _, ok := runFlags[fl.Name]; (ok || fl.Name == "config") && fl.Changed {
			given = true
		}
	})
	return given
}

// runFlags maps flag names to the copy of that field from the flag values into a Run.
var runFlags = map[string]func(dst, src *Run){
	"preset":              func(d, s *Run) { d.Preset = s.Preset },
	"model":               func(d, s *Run) { d.Model = s.Model },
	"dataset":             func(d, s *Run) { d.Dataset = s.Dataset },
	"dataset-fingerprint": func(d, s *Run) { d.DatasetFingerprint = s.DatasetFingerprint },
	"seed":                func(d, s *Run) { d.Seed = s.Seed },
	"steps":               func(d, s *Run) { d.Steps = s.Steps },
	"global-batch":        func(d, s *Run) { d.GlobalBatch = s.GlobalBatch },
	"lr":                  func(d, s *Run) { d.LR = s.LR },
	"warmup-steps":        func(d, s *Run) { d.WarmupSteps = s.WarmupSteps },
	"grad-clip":           func(d, s *Run) { d.GradClip = s.GradClip },
	"ema-decay":           func(d, s *Run) { d.EMADecay = s.EMADecay },
	"dropout":             func(d, s *Run) { d.Dropout = s.Dropout },
	"flip":                func(d, s *Run) { d.Flip = s.Flip },
	"t":                   func(d, s *Run) { d.T = s.T },
	"beta-schedule":       func(d, s *Run) { d.BetaSchedule = s.BetaSchedule },
	"beta-start":          func(d, s *Run) { d.BetaStart = s.BetaStart },
	"beta-end":            func(d, s *Run) { d.BetaEnd = s.BetaEnd },
	"checkpoint-every":    func(d, s *Run) { d.CheckpointEvery = s.CheckpointEvery },
	"keep-checkpoints":    func(d, s *Run) { d.KeepCheckpoints = s.KeepCheckpoints },
	"min-trainers":        func(d, s *Run) { d.MinTrainers = s.MinTrainers },
	"max-trainers":        func(d, s *Run) { d.MaxTrainers = s.MaxTrainers },
	"heartbeat-timeout":   func(d, s *Run) { d.HeartbeatTimeout = s.HeartbeatTimeout },
}

// Apply copies the values of the flags the user set onto r, leaving the other fields alone.
func (f *Flags) Apply(r *Run) {
	f.v.HeartbeatTimeout = Duration(f.hb)
	// VisitAll and Changed, not Visit: a flag set once stays in Visit's list even when a
	// command tree is run again in one process with its flags reset.
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if set, ok := runFlags[fl.Name]; ok && fl.Changed {
			set(r, &f.v)
		}
	})
}

// Resolve builds the run config from the bound flags, in layers from weakest to strongest: a
// preset, the --config file, the flags the user set; then Validate. The preset is the one
// --preset names, else the file's preset: field, else DefaultPreset; a file with none of them
// and no model is one line asking for a preset. Errors name the file where there is one; with
// neither --config nor --preset the error wraps ErrNoRunConfig.
func (f *Flags) Resolve() (Run, error) {
	var r Run
	switch {
	case f.Path != "":
		data, err := readFile(f.Path)
		if err != nil {
			return Run{}, err
		}
		if err := notYAML(f.Path, data, "; to train a preset as it is, give --preset NAME without --config"); err != nil {
			return Run{}, err
		}
		preset := ""
		if f.fs.Changed("preset") {
			preset = f.v.Preset
		} else if _, err := Preset(f.DefaultPreset); err == nil && !namesPreset(data) {
			preset = f.DefaultPreset
		}
		if r, err = parse(data, preset); err != nil {
			return Run{}, fmt.Errorf("%s: %w", f.Path, err)
		}
	case f.fs.Changed("preset"):
		var err error
		if r, err = Preset(f.v.Preset); err != nil {
			return Run{}, err
		}
	default:
		// Without either, every field would have to come from flags; name the two ways in
		// rather than listing a dozen missing fields.
		return Run{}, fmt.Errorf("%w: give --config FILE or --preset NAME (%s); flags then override its fields", ErrNoRunConfig, strings.Join(Presets(), ", "))
	}
	f.Apply(&r)
	r.normalize()
	if f.Path != "" {
		if err := noPreset(f.Path, r, " or give --preset NAME"); err != nil {
			return Run{}, err
		}
	}
	if err := f.worldError(r); err != nil {
		return Run{}, err
	}
	if err := f.stepsError(r); err != nil {
		return Run{}, err
	}
	if err := f.betaError(r); err != nil {
		return Run{}, err
	}
	if err := r.Validate(); err != nil {
		// A line no flag answers for starts with where its values came from: the --config
		// file, or the preset (--preset, or ddpm local's from --data).
		where := f.Path
		if where == "" {
			where = f.Source()
		}
		return Run{}, f.validationLines(where, err)
	}
	return r, nil
}

// validationLines is err from Validate with each line saying where its value came from: a rule
// about one field that a flag set names the flag ("--lr must be in (0, 1], got 5"); every other
// line starts with where (the --config file, or "preset NAME"). Naming the file for a value the flag
// gave sent users to a file that holds no such value. The result is ErrInvalid under errors.Is.
func (f *Flags) validationLines(where string, err error) error {
	lines := []error{err}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		lines = joined.Unwrap()
	}
	out := make([]error, len(lines))
	for i, e := range lines {
		var fe *fieldError
		if errors.As(e, &fe) && f.fs.Changed(strings.ReplaceAll(fe.field, "_", "-")) {
			out[i] = flagError("--" + strings.ReplaceAll(fe.field, "_", "-") + fe.rest)
		} else {
			out[i] = fmt.Errorf("%s: %w", where, e)
		}
	}
	return errors.Join(out...)
}

// namesPreset reports whether the run config document data sets its preset: field.
func namesPreset(data []byte) bool {
	var probe struct {
		Preset string `json:"preset"`
	}
	return yaml.Unmarshal(data, &probe) == nil && probe.Preset != ""
}

// Source names where the fields the flags did not set come from: "config FILE" or "preset
// NAME" ("flags" when neither is given).
func (f *Flags) Source() string {
	switch {
	case f.Path != "":
		return "config " + f.Path
	case f.fs.Changed("preset"):
		return "preset " + f.v.Preset
	}
	return "flags"
}

// worldError is the one line for a world size that contradicts itself (min_trainers above
// max_trainers, max_trainers above global_batch) when the user set one of those by flag: it
// names the flag as typed and where the other value comes from, e.g.
//
//	--global-batch 3: fewer images than max_trainers 4 of preset mnist (a rank would get no samples); give --max-trainers 3 or fewer too
//
// nil when they agree or none of them was set by flag (Validate then names the YAML fields).
// The error is ErrInvalid under errors.Is.
func (f *Flags) worldError(r Run) error {
	src := f.Source()
	minSet, maxSet, gbSet := f.fs.Changed("min-trainers"), f.fs.Changed("max-trainers"), f.fs.Changed("global-batch")
	var msg string
	switch {
	case r.MinTrainers <= r.MaxTrainers:
	case minSet && maxSet:
		msg = fmt.Sprintf("--min-trainers %d is more than --max-trainers %d", r.MinTrainers, r.MaxTrainers)
	case minSet:
		msg = fmt.Sprintf("--min-trainers %d: more than max_trainers %d of %s; give --max-trainers %d or more too", r.MinTrainers, r.MaxTrainers, src, r.MinTrainers)
	case maxSet:
		msg = fmt.Sprintf("--max-trainers %d: fewer than min_trainers %d of %s; give --min-trainers %d or fewer too", r.MaxTrainers, r.MinTrainers, src, r.MaxTrainers)
	}
	if msg == "" && r.GlobalBatch > 0 && r.MaxTrainers > r.GlobalBatch {
		switch {
		case maxSet && gbSet:
			msg = fmt.Sprintf("--max-trainers %d is more than --global-batch %d (a rank would get no samples)", r.MaxTrainers, r.GlobalBatch)
		case gbSet:
			msg = fmt.Sprintf("--global-batch %d: fewer images than max_trainers %d of %s (a rank would get no samples); give --max-trainers %d or fewer too", r.GlobalBatch, r.MaxTrainers, src, r.GlobalBatch)
		case maxSet:
			msg = fmt.Sprintf("--max-trainers %d: more than global_batch %d of %s (a rank would get no samples)", r.MaxTrainers, r.GlobalBatch, src)
		}
	}
	if msg == "" {
		return nil
	}
	return flagError(msg)
}

// stepsError is the one line for checkpoint_every larger than steps when the user set one of
// them by flag: it names the flag as typed, where the other value comes from, and the value to
// give, e.g.
//
//	--steps 20 is shorter than checkpoint_every 50 of preset mnist: give --checkpoint-every 20 or less too
//
// nil when they agree or neither was set by flag (Validate then names the YAML fields). It used
// to be "flags: invalid run config: checkpoint_every 50 is larger than the run (steps 20)", which
// named no flag and no way out. The error is ErrInvalid under errors.Is.
func (f *Flags) stepsError(r Run) error {
	if r.CheckpointEvery <= 0 || r.Steps <= 0 || r.CheckpointEvery <= r.Steps {
		return nil
	}
	src := f.Source()
	switch stepsSet, everySet := f.fs.Changed("steps"), f.fs.Changed("checkpoint-every"); {
	case stepsSet && everySet:
		return flagError(fmt.Sprintf("--checkpoint-every %d is more than --steps %d: give --checkpoint-every %d or less",
			r.CheckpointEvery, r.Steps, r.Steps))
	case stepsSet:
		return flagError(fmt.Sprintf("--steps %d is shorter than checkpoint_every %d of %s: give --checkpoint-every %d or less too",
			r.Steps, r.CheckpointEvery, src, r.Steps))
	case everySet:
		return flagError(fmt.Sprintf("--checkpoint-every %d is more than steps %d of %s: give --checkpoint-every %d or less, or --steps %d or more too",
			r.CheckpointEvery, r.Steps, src, r.Steps, r.CheckpointEvery))
	}
	return nil
}

// betaError is the one line for betas breaking 0 < beta_start <= beta_end < 1 when the user set
// one of them by flag: a value out of (0, 1) names its flag; beta_start above beta_end names the
// flag(s), where the other value comes from and the values to give, e.g.
//
//	--beta-start 0.5 is more than beta_end 0.02 of preset mnist: give --beta-start 0.02 or less, or --beta-end 0.5 or more too
//
// It used to be one line about both YAML fields starting with where the other came from
// ("preset mnist: invalid run config: betas must satisfy ..."). nil when they agree or neither
// was set by flag. The error is ErrInvalid under errors.Is.
func (f *Flags) betaError(r Run) error {
	startSet, endSet := f.fs.Changed("beta-start"), f.fs.Changed("beta-end")
	src := f.Source()
	switch {
	case startSet && !(r.BetaStart > 0 && r.BetaStart < 1):
		return flagError(fmt.Sprintf("--beta-start %g: want a value in (0, 1)", r.BetaStart))
	case endSet && !(r.BetaEnd > 0 && r.BetaEnd < 1):
		return flagError(fmt.Sprintf("--beta-end %g: want a value in (0, 1)", r.BetaEnd))
	case r.BetaStart <= r.BetaEnd:
		return nil
	case !startSet && !(r.BetaStart > 0 && r.BetaStart < 1), !endSet && !(r.BetaEnd > 0 && r.BetaEnd < 1):
		// The value no flag gave is itself out of (0, 1): Validate names it where it came
		// from; matching the flag to it would advise a value out of range.
		return nil
	case startSet && endSet:
		return flagError(fmt.Sprintf("--beta-start %g is more than --beta-end %g: the betas rise from beta_start to beta_end; swap them",
			r.BetaStart, r.BetaEnd))
	case startSet:
		return flagError(fmt.Sprintf("--beta-start %g is more than beta_end %g of %s: give --beta-start %g or less, or --beta-end %g or more too",
			r.BetaStart, r.BetaEnd, src, r.BetaEnd, r.BetaStart))
	case endSet:
		return flagError(fmt.Sprintf("--beta-end %g is less than beta_start %g of %s: give --beta-end %g or more, or --beta-start %g or less too",
			r.BetaEnd, r.BetaStart, src, r.BetaStart, r.BetaEnd))
	}
	return nil
}

// flagError is a bad flag value in one line that starts with the flag; it is ErrInvalid under
// errors.Is.
type flagError string

func (e flagError) Error() string        { return string(e) }
func (e flagError) Is(target error) bool { return target == ErrInvalid }
