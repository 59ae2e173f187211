package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ddpm/dataset"
	"ddpm/diffusion"
	"ddpm/internal/rng"
)

type evalOpts struct {
	checkpoint string
	step       int64
	data       string
	split      string
	splitSet   bool // --split was given
	n          int
	nSet       bool // --n was given
	batch      int
	seed       uint64
	raw        bool
	model      string
}

func newEvalCmd() *cobra.Command {
	eval := &cobra.Command{Use: "eval", Short: "Evaluate a checkpoint"}
	var o evalOpts
	bpd := &cobra.Command{
		Use:   "bpd --checkpoint PATH [--data PATH] [--n 1000]",
		Short: "Test-set variational bound in bits/dim and its terms (paper Table 2)",
		Long: `bpd evaluates the full variational bound (eq. 5) of the EMA weights on the first --n images
of the test split, as the original's calc_bpd_loop: T model evaluations per batch. It prints
the mean total bits/dim with its standard error, the prior term L_T, the decoder term L_0 and
the sum of the KL terms L_1..L_{T-1}.

A dataset without splits (an image folder, an LSUN LMDB) has no test set: by default eval bpd
evaluates its first --n images and says "all images (an image folder has no test split)" where
it names the split; an explicit --split test (or a :test suffix) on one is refused.`,
		Args: checkpointFlagArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.splitSet = cmd.Flags().Changed("split")
			o.nSet = cmd.Flags().Changed("n")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runEvalBPD(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := bpd.Flags()
	f.StringVar(&o.checkpoint, "checkpoint", "", "checkpoint file, trainer folder or run folder (required)")
	addStepFlag(f, &o.step, "checkpoint step (default: the newest that verifies)")
	f.StringVar(&o.data, "data", "", "the data to evaluate on: mnist, fashion-mnist (:test, :train) or a path, as ddpm dataset inspect takes it (default: the run's dataset)")
	f.StringVar(&o.split, "split", "test", "split to evaluate (train or test; a --data spec's :train or :test suffix sets it; data without splits: all its images)")
	f.IntVar(&o.n, "n", 1000, "images to evaluate, the first n of the split (a split of fewer without --n: all of it)")
	f.IntVar(&o.batch, "batch", 50, "images per model evaluation")
	f.Uint64Var(&o.seed, "seed", 0, "seed of the forward-process noise")
	f.BoolVar(&o.raw, "raw", false, "evaluate the raw parameters instead of the EMA")
	f.StringVar(&o.model, "model", "", "expected U-Net preset; refuse a checkpoint of another one")
	eval.AddCommand(bpd)
	return eval
}

func init() { rootCmd.AddCommand(newEvalCmd()) }

// maxEvalBatch bounds --batch: CalcBPD holds T terms per image and the model's activations for
// the whole batch.
const maxEvalBatch = 1024

// evalSplit is the split eval reads from spec: the one spec names (mnist:train), else --split
// (default test). A --split the command line gives that differs from spec's is refused.
func evalSplit(spec, split string, splitSet bool) (string, error) {
	if sfx := specSplit(spec); sfx != "" {
		if splitSet && split != sfx {
			return "", withExit(2, fmt.Errorf("--split %s conflicts with the split in %s", split, spec))
		}
		return sfx, nil
	}
	if split != "train" && split != "test" {
		return "", withExit(2, fmt.Errorf("--split %s: want train or test", split))
	}
	return split, nil
}

// datasetPathExists reports whether the file or folder spec reads exists from the working
// directory; true for the built-in mnist and fashion-mnist, which name no path.
func datasetPathExists(spec string) bool {
	in := datasetInput(spec)
	if in.path == "" {
		return true
	}
	_, err := os.Stat(in.path)
	return err == nil
}

func runEvalBPD(ctx context.Context, out, log io.Writer, o evalOpts) error {
	switch {
	case o.checkpoint == "":
		return withExit(2, errors.New("--checkpoint is required"))
	case o.n < 1 || o.batch < 1:
		return withExit(2, fmt.Errorf("--n %d --batch %d: want both at least 1", o.n, o.batch))
	case o.batch > maxEvalBatch:
		return withExit(2, fmt.Errorf("--batch %d: at most %d images per model evaluation", o.batch, maxEvalBatch))
	}
	er, err := resolveEvalRun(o.checkpoint, o.model)
	if err != nil {
		return err
	}
	if line := damagedRead("eval bpd", o.checkpoint, er.file); line != "" {
		fmt.Fprintln(log, line)
	}
	spec := o.data
	if spec == "" {
		spec = er.run.Dataset
	}
	split, err := evalSplit(spec, o.split, o.splitSet)
	if err != nil {
		return err
	}
	splitName := split
	// A folder of greyscale images is read with the checkpoint's model's channels (one plane,
	// or the grey level in three), as its trainers read it.
	ds, err := openSpec(spec, dataset.Options{Split: split, Channels: er.c})
	if errors.Is(err, dataset.ErrNoSplit) && !o.splitSet && specSplit(spec) == "" {
		// The default test split of data that has none (an image folder): evaluate the
		// images it has and say so, instead of calling them a test split.
		if ds, err = openSpec(spec, dataset.Options{Channels: er.c}); err == nil {
			splitName = fmt.Sprintf("all images (%s has no test split)", formatWords(dataset.Describe(ds).Format))
		}
	}
	if errors.Is(err, dataset.ErrOption) && specSplit(spec) == "" {
		if why := otherSplitOnly(spec, split, o.data == "", er.c); why != nil {
			return why
		}
	}
	if errors.Is(err, dataset.ErrNotFound) && o.data == "" && !datasetPathExists(spec) {
		// The run's dataset, as its run.yaml names it (a relative path is relative to the
		// directory the run was started in). Only a path that is not there: the built-in
		// mnist's missing files, or a folder without the split asked for, keep their own line.
		return withExit(exitUsage, fmt.Errorf("%w: %s, the run's dataset (named in %s), does not exist from this directory; give its path with --data", dataset.ErrNotFound, spec, er.cfgPath))
	}
	if err != nil {
		return err
	}
	c, h, w := ds.Shape()
	if c != er.c || h != er.h || w != er.w {
		return withExit(2, fmt.Errorf("dataset %s has %dx%dx%d images, the checkpoint's model %s wants %dx%dx%d", ds.Name(), c, h, w, er.run.Model, er.c, er.h, er.w))
	}
	if !o.nSet && o.n > ds.Len() {
		o.n = ds.Len() // the default asks for up to 1000: a smaller set is evaluated whole
	}
	if o.n > ds.Len() {
		return withExit(2, fmt.Errorf("--n %d: dataset %s holds %d images", o.n, ds.Name(), ds.Len()))
	}
	ld, err := er.load(o.step, !o.raw)
	if err != nil {
		return err
	}
	if o.step < 0 {
		if msg := damagedNewerWarning("ddpm eval bpd", ld.Path, ld.Step); msg != "" {
			fmt.Fprintln(log, msg)
		}
	}
	if !o.raw {
		if msg := evalEMAWarning(ld.Run.EMADecay, ld.Step, er.file, er.cfgPath); msg != "" {
			fmt.Fprintln(log, msg)
		}
	}
	n := o.n
	d := c * h * w
	T := ld.Sched.T()
	var total, prior, l0, kl []float64
	t0 := time.Now()
	prog := newProgressLine(log, evalProgressEvery)
	for lo := 0; lo < n; lo += o.batch {
		b := min(o.batch, n-lo)
		x0 := make([]float32, b*d)
		for i := range b {
			if err := ds.Image(lo+i, x0[i*d:(i+1)*d]); err != nil {
				prog.End()
				return withExit(exitBadData, fmt.Errorf("dataset %s image %d: %w", ds.Name(), lo+i, err))
			}
		}
		opts := diffusion.ReverseOptions{Progress: func(t int, _, _ []float32) {
			if ctx.Err() != nil {
				panic(interruption{t})
			}
			prog.Report(false, "ddpm eval bpd: %d/%d images, timestep %d of %d of images %d-%d (%.0fs)", lo, n, T-t, T, lo+1, lo+b, time.Since(t0).Seconds())
		}}
		var r diffusion.BPD
		if in := interruptible(func() {
			r = ld.Sched.CalcBPD(ld.Eps, x0, b, diffusion.StreamNoise(o.seed, rng.PurposeNoise, uint64(lo)), opts)
		}); in != nil {
			prog.End()
			if lo == 0 { // no running total yet (the mean of nothing is NaN)
				if b == 1 {
					return withExit(exitInterrupted, errors.New("eval bpd interrupted before the first image was done"))
				}
				return withExit(exitInterrupted, fmt.Errorf("eval bpd interrupted before the first %d images were done", b))
			}
			return withExit(exitInterrupted, fmt.Errorf("eval bpd interrupted after %d of %d images (running total %.4f bits/dim)", lo, n, mean(total)))
		}
		for i := range b {
			total = append(total, r.Total[i])
			prior = append(prior, r.Prior[i])
			l0 = append(l0, r.Terms[i*T])
			var s float64
			for t := 1; t < T; t++ {
				s += r.Terms[i*T+t]
			}
			kl = append(kl, s)
		}
		prog.Report(true, "ddpm eval bpd: %d/%d images, running total %.4f bits/dim (%.0fs)", lo+b, n, mean(total), time.Since(t0).Seconds())
	}
	prog.End()
	m, se := meanSE(total)
	data := ds.Name() + " " + splitName
	if strings.HasSuffix(ds.Name(), "/"+splitName) { // mnist/test, not "mnist/test test"
		data = ds.Name()
	}
	fmt.Fprintf(out, "checkpoint %s step %d (%s), %s, %s, T=%d\n", ld.Path, ld.Step, weightsName(o.raw), data, countNoun(n, "image", "images"), T)
	if len(total) > 1 {
		fmt.Fprintf(out, "total bits/dim  %.4f ± %.4f (standard error of the mean over %d images)\n", m, se, len(total))
	} else {
		fmt.Fprintf(out, "total bits/dim  %.4f (one image: no standard error; give --n 2 or more)\n", m)
	}
	fmt.Fprintf(out, "  prior L_T     %.6f\n", mean(prior))
	fmt.Fprintf(out, "  decoder L_0   %.4f\n", mean(l0))
	fmt.Fprintf(out, "  KL L_1..L_T-1 %.4f\n", mean(kl))
	return nil
}

// evalProgressEvery is how often eval bpd reports the timestep it has reached when stderr is no
// terminal (a log file, a pipe), as sample does: a batch of 50 images of the tiny model takes
// minutes on 2 cores, and without it nothing was printed until the batch was done. (A variable
// for tests.)
var evalProgressEvery = 10 * time.Second

// otherSplitOnly is eval's line, exit status 2, for data that holds one split only (a folder
// ddpm dataset prepare made from a training split, an idx file named train-*) when split is
// the other one; nil when spec is not such data. runs says that spec is the run's dataset
// (run.yaml), not --data. The way out names the built-in set's split where the data came from
// one:
//
//	the run's dataset /runs/fm/data holds only the train split (fashion-mnist/train): give --data fashion-mnist:test for the test split, or --split train to evaluate its own images
func otherSplitOnly(spec, split string, runs bool, channels int) error {
	ds, err := openSpec(spec, dataset.Options{Channels: channels})
	if err != nil {
		return nil
	}
	info := dataset.Describe(ds)
	if info.Split == "" || info.Split == split {
		return nil
	}
	who := "--data " + shellWord(spec)
	if runs {
		who = "the run's dataset " + shellWord(spec)
	}
	other := fmt.Sprintf("give --data the %s split of the data it came from", split)
	if base := strings.TrimSuffix(info.Name, "/"+info.Split); base == "mnist" || base == "fashion-mnist" {
		other = fmt.Sprintf("give --data %s:%s for the %s split", base, split, split)
	}
	return withExit(exitUsage, fmt.Errorf("%s holds only the %s split (%s): %s, or --split %s to evaluate its own images",
		who, info.Split, info.Name, other, info.Split))
}

// meanSE returns the mean of xs and its standard error s/sqrt(n), s the sample standard deviation
// (n-1 in the denominator, two passes); se is NaN for fewer than 2 values. It was the population
// deviation over sqrt(n), sqrt(2) too small at n = 2 and 0 at n = 1.
func meanSE(xs []float64) (m, se float64) {
	m = mean(xs)
	if len(xs) < 2 {
		return m, math.NaN()
	}
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	return m, math.Sqrt(ss/float64(len(xs)-1)) / math.Sqrt(float64(len(xs)))
}

// formatWords names a dataset format without splits for eval's output: "an image folder",
// "an LSUN LMDB".
func formatWords(format string) string {
	switch format {
	case "image-folder":
		return "an image folder"
	case "lsun-lmdb":
		return "an LSUN LMDB"
	case "prepared":
		return "a prepared folder"
	}
	return "the " + format + " dataset"
}

func mean(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}
