package main

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	_ "image/jpeg"
	_ "image/png"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	_ "golang.org/x/image/webp" // --interpolate images, as the dataset folders take them

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/diffusion"
	"ddpm/internal/rng"
	"ddpm/internal/viz"
	"ddpm/trainer"
	"ddpm/unet"
)

type sampleOpts struct {
	checkpoint  string
	step        int64
	n           int
	seed        uint64
	out         string
	progressive string
	every       int
	interpolate []string
	lambdaSteps int
	interpT     int
	raw         bool
	model       string
	export      string
	force       bool // replace existing output files
	noEMAWarn   bool // no warning for stale EMA weights (ddpm local warned at its start)
	// given names the flags set on the command line (nil: none, as for ddpm local's grid);
	// a flag given where it has no effect is refused rather than dropped silently.
	given map[string]bool
}

func newSampleCmd() *cobra.Command {
	var o sampleOpts
	cmd := &cobra.Command{
		Use:   "sample --checkpoint PATH [--step N] [--n 64] [--seed S] --out grid.png",
		Short: "Draw samples from a checkpoint's EMA weights (Algorithm 2) into a PNG grid",
		Long: `sample loads a checkpoint (a trainer's checkpoints.db, a trainer folder or a ddpm local run
folder; the run config comes from the run.yaml beside it), runs the reverse process (Algorithm 2,
fixed-large variance, predicted x0 clipped) on the EMA weights and writes an image grid.
--progressive also writes the predicted x0 every --every steps (paper Fig. 6, one row per sample);
--interpolate A.png,B.png writes the latent-space interpolation of paper Fig. 8.`,
		Args: checkpointFlagArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.given = map[string]bool{}
			cmd.Flags().VisitAll(func(f *pflag.Flag) { o.given[f.Name] = f.Changed })
			return runSample(ctx, cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.checkpoint, "checkpoint", "", "checkpoint file, trainer folder or run folder (required)")
	addStepFlag(f, &o.step, "checkpoint step (default: the newest that verifies)")
	f.IntVar(&o.n, "n", 64, "number of samples")
	f.Uint64Var(&o.seed, "seed", 0, "seed of the sampling noise")
	f.StringVar(&o.out, "out", "", "output PNG grid (required)")
	f.StringVar(&o.progressive, "progressive", "", "also write the predicted x0 along the chain to this PNG")
	f.IntVar(&o.every, "every", 0, "with --progressive: record every this many steps, 1..T (default T/10: 100 of T = 1000)")
	f.StringSliceVar(&o.interpolate, "interpolate", nil, "two images A.png,B.png (PNG, JPEG or WebP, of the model's size) to interpolate between (paper Fig. 8)")
	f.IntVar(&o.lambdaSteps, "lambda-steps", 8, "with --interpolate: mixing weights 0..1 in this many intervals")
	f.IntVar(&o.interpT, "interpolate-t", 0, "with --interpolate: the timestep both images are diffused to, 0..T-1 (default T/2: the paper's 500 of T = 1000)")
	f.BoolVar(&o.raw, "raw", false, "use the raw parameters instead of the EMA")
	f.StringVar(&o.model, "model", "", "expected U-Net preset; refuse a checkpoint of another one")
	f.StringVar(&o.export, "export-weights", "", "write the loaded weights (EMA unless --raw) as safetensors with PyTorch names; with no --out, only that")
	f.BoolVar(&o.force, "force", false, "replace output files that already exist")
	return cmd
}

func init() { rootCmd.AddCommand(newSampleCmd()) }

// checkpointFlagArgs is the Args check of sample and eval bpd, which take no arguments: the
// checkpoint is their --checkpoint flag, while the checkpoint commands (list, export) and
// status and loss take a run folder as their argument, and so a user gives one here too. A
// lone argument without --checkpoint that is a folder or a checkpoint file gets the flag to give
// it with; a lone PNG name given to sample without --out, that flag; any other argument is named
// as one the command does not take. (All were cobra's 'unknown command "runs/a" for "ddpm
// sample"'.) The caller's usage wrapper adds the command's name and usage line.
//
//	runs/a: give the checkpoint as --checkpoint runs/a
//	grid.png: give the output as --out grid.png
//	unexpected argument 16: the command takes flags only
func checkpointFlagArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 || flagTakenAsValue(cmd) != nil {
		// A flag whose value was left out (--checkpoint --n 3: "--n" its value, 3 an
		// argument): the root's PersistentPreRunE names that mistake, after this check.
		return nil
	}
	if a := args[0]; len(args) == 1 {
		st, err := os.Stat(a)
		switch {
		case cmd.Flags().Changed("checkpoint"):
		case err == nil && (st.IsDir() || sniffFile(a) == kindCheckpoint):
			return fmt.Errorf("%s: give the checkpoint as --checkpoint %s", a, shellWord(a))
		}
		if cmd.Flags().Lookup("out") != nil && !cmd.Flags().Changed("out") && strings.EqualFold(filepath.Ext(a), ".png") {
			return fmt.Errorf("%s: give the output as --out %s", a, shellWord(a))
		}
	}
	noun := "argument"
	if len(args) > 1 {
		noun = "arguments"
	}
	return fmt.Errorf("unexpected %s %s: the command takes flags only", noun, strings.Join(args, " "))
}

// sampleBatch is the number of images one reverse process runs at a time: memory stays that of
// sampleBatch images whatever --n is. Image i's noise depends on (seed, i) alone
// (diffusion.StreamNoise), so the samples are those of one batch of --n. (A variable for tests.)
var sampleBatch = 64

// evalRun is what sample and eval know of --checkpoint before loading it: the checkpoint file,
// the run.yaml beside it, the run config and its image shape.
type evalRun struct {
	file, cfgPath string
	run           config.Run
	c, h, w       int
}

// resolveEvalRun reads the run config of the checkpoint that --checkpoint names (a file, a
// trainer folder or a run folder), without loading weights, and checks --model against it.
// Errors have exit status 2 and name the flag.
func resolveEvalRun(checkpointPath, model string) (*evalRun, error) {
	if model != "" && !slices.Contains(config.Models, model) {
		return nil, withExit(2, fmt.Errorf("--model %q is not a U-Net preset (known: %s)", model, strings.Join(config.Models, ", ")))
	}
	if _, err := os.Stat(checkpointPath); errors.Is(err, os.ErrNotExist) {
		return nil, withExit(2, fmt.Errorf("--checkpoint %s does not exist", checkpointPath))
	} else if err != nil {
		return nil, withExit(2, fmt.Errorf("--checkpoint %s: %w", checkpointPath, errors.Unwrap(err)))
	}
	if err := checkCheckpointKind("--checkpoint", checkpointPath); err != nil {
		return nil, err
	}
	file, cfgPath, err := trainer.ResolveCheckpoint(checkpointPath)
	if err != nil {
		return nil, withExit(2, noCheckpointYet(checkpointPath, err))
	}
	run, err := config.Load(cfgPath)
	if err != nil {
		return nil, withExit(2, err)
	}
	if model != "" && run.Model != model {
		return nil, withExit(2, fmt.Errorf("--model %s: %s belongs to a run of model %s (%s)", model, file, run.Model, cfgPath))
	}
	ucfg, err := unet.Preset(run.Model)
	if err != nil {
		return nil, withExit(2, fmt.Errorf("%s: %w", cfgPath, err))
	}
	return &evalRun{file: file, cfgPath: cfgPath, run: run, c: ucfg.InCh, h: ucfg.Resolution, w: ucfg.Resolution}, nil
}

// load loads the checkpoint's weights (trainer.LoadForEval); a checkpoint that does not match
// its run config is named without the trainer package's sentinel text.
func (r *evalRun) load(step int64, ema bool) (*trainer.Loaded, error) {
	ld, err := trainer.LoadForEval(r.file, step, ema, "")
	switch {
	case errors.Is(err, checkpoint.ErrInUse):
		return nil, inUseExit(err)
	case errors.Is(err, trainer.ErrMismatch):
		return nil, withExit(2, errors.New(strings.TrimPrefix(err.Error(), trainer.ErrMismatch.Error()+": ")))
	case errors.Is(err, os.ErrPermission):
		return nil, checkpointPermission(r.file)
	case errors.Is(err, checkpoint.ErrNoneYet):
		return nil, withExit(2, noneYetLine(r.file, err))
	case errors.Is(err, checkpoint.ErrNotFound) && step >= 0:
		// The steps it holds, as checkpoint verify and export name them.
		if st, oerr := checkpoint.Open(r.file, checkpoint.Options{ReadOnly: true}); oerr == nil {
			defer st.Close()
			return nil, missingStep(st, step)
		}
		return nil, withExit(2, fmt.Errorf("--step %d: %s holds no checkpoint of that step (ddpm checkpoint list %s)", step, r.file, shellWord(r.file)))
	case err != nil:
		return nil, withExit(2, err)
	}
	return ld, nil
}

func runSample(ctx context.Context, w io.Writer, o sampleOpts) error {
	switch {
	case o.checkpoint == "":
		return withExit(2, errors.New("--checkpoint is required"))
	case o.out == "" && o.export == "":
		return withExit(2, errors.New("--out is required"))
	case o.n < 1:
		return withExit(2, fmt.Errorf("--n %d: want at least 1", o.n))
	case len(o.interpolate) != 0 && len(o.interpolate) != 2:
		return withExit(2, fmt.Errorf("--interpolate takes two images, got %d", len(o.interpolate)))
	case o.lambdaSteps < 1:
		return withExit(2, fmt.Errorf("--lambda-steps %d: want at least 1", o.lambdaSteps))
	case o.progressive != "" && len(o.interpolate) != 0:
		return withExit(2, errors.New("--progressive records the chain of --n samples; it cannot be combined with --interpolate"))
	case o.progressive != "" && o.out == "":
		return withExit(2, errors.New("--progressive needs --out (the samples whose chain it records)"))
	}
	if err := checkSampleNoEffect(o); err != nil {
		return err
	}
	er, err := resolveEvalRun(o.checkpoint, o.model)
	if err != nil {
		return err
	}
	if line := damagedRead("sample", o.checkpoint, er.file); line != "" {
		fmt.Fprintln(w, line)
	}
	// Refuse an output nobody can write, or one that would replace an input, before minutes or
	// hours of sampling, not after.
	// Both places a run.yaml may be (a trainer's folder, a ddpm local run's folder) are the run's.
	inputs := []inputFile{{"the checkpoint", er.file}, {"the run config", er.cfgPath},
		{"the run config", filepath.Join(filepath.Dir(filepath.Dir(er.file)), trainer.ConfigFile)}}
	for _, p := range o.interpolate {
		inputs = append(inputs, inputFile{"--interpolate image", p})
	}
	outs := []outFile{{"--out", o.out}, {"--progressive", o.progressive}, {"--export-weights", o.export}}
	// What no --force lets through first, then the names, then an existing file (see ddpm loss).
	if err := checkOutputs(true, outs, inputs...); err != nil {
		return err
	}
	if err := checkPNGNames(outs[:2]...); err != nil {
		return err
	}
	// As checkpoint export names its --out: the file is safetensors whatever its name.
	if err := checkOutNames(".safetensors", "the weights are written as safetensors", outs[2]); err != nil {
		return err
	}
	if err := checkOutputs(o.force, outs, inputs...); err != nil {
		return err
	}
	c, h, wd := er.c, er.h, er.w
	T := er.run.T
	var xa, xb []float32
	switch {
	case o.out == "":
	case len(o.interpolate) == 2:
		// The row: A, the lambdaSteps+1 mixtures, B.
		if most := viz.MaxGridTiles(h, wd); o.lambdaSteps > most-3 {
			return withExit(2, fmt.Errorf("--lambda-steps %d: at most %d fit one grid of %dx%d images (2^28 pixels)", o.lambdaSteps, most-3, h, wd))
		}
		if !o.given["interpolate-t"] {
			o.interpT = T / 2 // the paper's Fig. 8 diffuses to t = 500 of T = 1000
		}
		if o.interpT < 0 || o.interpT >= T {
			return withExit(2, fmt.Errorf("--interpolate-t %d: want 0..%d", o.interpT, T-1))
		}
		if xa, err = readImage(o.interpolate[0], c, h, wd); err != nil {
			return withExit(2, err)
		}
		if xb, err = readImage(o.interpolate[1], c, h, wd); err != nil {
			return withExit(2, err)
		}
	default:
		if err := checkGridCount("--n", o.n, h, wd); err != nil {
			return err
		}
		if o.progressive != "" {
			if !o.given["every"] {
				o.every = max(1, T/10)
			}
			if o.every < 1 || o.every > T {
				return withExit(2, fmt.Errorf("--every %d: want 1..%d", o.every, T))
			}
			// One row per sample: the predicted x0 every --every steps, then the sample.
			if cols, most := T/o.every+1, viz.MaxGridTiles(h, wd); o.n > most/cols {
				return withExit(2, fmt.Errorf("--progressive with --every %d: at most %d rows of %d images of %dx%d fit one grid (2^28 pixels), not --n %d",
					o.every, most/cols, cols, h, wd, o.n))
			}
		}
	}
	ld, err := er.load(o.step, !o.raw)
	if err != nil {
		return err
	}
	if o.step < 0 {
		if msg := damagedNewerWarning("ddpm sample", ld.Path, ld.Step); msg != "" {
			fmt.Fprintln(w, msg)
		}
	}
	if !o.raw && !o.noEMAWarn {
		if msg := sampleEMAWarning(ld.Run.EMADecay, ld.Step, er.file, er.cfgPath); msg != "" {
			fmt.Fprintln(w, msg)
		}
	}
	if o.export != "" {
		// The keys and spellings of ddpm checkpoint export's metadata (checkpoint.Export).
		weights := "ema"
		if o.raw {
			weights = "params"
		}
		meta := map[string]string{"format": "pt", "model": ld.Run.Model, "step": fmt.Sprint(ld.Step), "weights": weights, "config_hash": ld.Run.Hash()}
		if err := unet.WriteSafetensors(o.export, ld.Model.Tensors(), ld.Model.Params(), meta); err != nil {
			return fmt.Errorf("--export-weights %s: %w", o.export, err)
		}
		fmt.Fprintf(w, "ddpm sample: wrote the %s of %s step %d to %s\n", weightsName(o.raw), ld.Path, ld.Step, o.export)
		if o.out == "" {
			return nil
		}
	}
	if len(o.interpolate) == 2 {
		return runInterpolate(ctx, w, ld, o, xa, xb)
	}
	t0 := time.Now()
	d := c * h * wd
	cols := 0
	if o.progressive != "" {
		cols = T/o.every + 1
	}
	x := make([]float32, o.n*d)
	tiles := make([]float32, o.n*cols*d)
	prog := newProgressLine(w, 10*time.Second)
	for lo := 0; lo < o.n; lo += sampleBatch {
		b := min(sampleBatch, o.n-lo)
		sh := diffusion.Shape{b, c, h, wd}
		noise := diffusion.StreamNoise(o.seed, rng.PurposeSampling, uint64(lo))
		opts := diffusion.ReverseOptions{Progress: func(t int, _, _ []float32) {
			if ctx.Err() != nil {
				panic(interruption{t})
			}
			prog.Report(t == 0, "ddpm sample: %s: step %d of %d (%.0fs)", imageRange(lo, b, o.n), T-t, T, time.Since(t0).Seconds())
		}}
		err := interruptible(func() {
			if o.progressive == "" {
				copy(x[lo*d:], ld.Sched.Sample(ld.Eps, sh, noise, opts))
				return
			}
			p := ld.Sched.SampleProgressive(ld.Eps, sh, noise, o.every, opts)
			copy(x[lo*d:], p.X0)
			for i := range b {
				row := tiles[(lo+i)*cols*d:]
				for j := range p.Steps {
					copy(row[j*d:(j+1)*d], p.PredX0[j][i*d:(i+1)*d])
				}
				copy(row[(cols-1)*d:cols*d], p.X0[i*d:(i+1)*d])
			}
		})
		if err != nil {
			prog.End()
			return withExit(exitInterrupted, fmt.Errorf("sample interrupted at step %d of %d of %s; nothing was written", T-err.t, T, imageRange(lo, b, o.n)))
		}
	}
	prog.End()
	if o.progressive != "" {
		if err := viz.WritePNG(o.progressive, viz.Grid(tiles, o.n*cols, c, h, wd, cols, 2)); err != nil {
			return fmt.Errorf("--progressive %s: %w", o.progressive, err)
		}
	}
	if err := viz.WritePNG(o.out, viz.Grid(x, o.n, c, h, wd, gridCols(o.n), 2)); err != nil {
		return fmt.Errorf("--out %s: %w", o.out, err)
	}
	chain := ""
	if o.progressive != "" {
		whose := "their"
		if o.n == 1 {
			whose = "its"
		}
		chain = fmt.Sprintf("; %s predicted x0 every %s -> %s", whose, countNoun(o.every, "step", "steps"), o.progressive)
	}
	fmt.Fprintf(w, "ddpm sample: %s of %s step %d (%s) in %.1fs -> %s%s\n", countNoun(o.n, "sample", "samples"), ld.Path, ld.Step, weightsName(o.raw), time.Since(t0).Seconds(), o.out, chain)
	return nil
}

// checkSampleNoEffect refuses a flag given where it changes nothing (one line, exit 2): --every
// without --progressive, --lambda-steps or --interpolate-t without --interpolate, --n with
// --interpolate (that draws one row of --lambda-steps+3 images), and without --out (only
// --export-weights is written) anything that shapes the images.
func checkSampleNoEffect(o sampleOpts) error {
	if o.out == "" {
		for _, f := range []string{"n", "seed", "interpolate", "lambda-steps", "interpolate-t", "every"} {
			if o.given[f] {
				return withExit(2, fmt.Errorf("--%s has no effect without --out (only --export-weights is written); give --out or drop --%s", f, f))
			}
		}
		return nil
	}
	switch {
	case o.given["every"] && o.progressive == "":
		return withExit(2, errors.New("--every sets how often --progressive records the chain; it has no effect without --progressive"))
	case o.given["n"] && len(o.interpolate) != 0:
		return withExit(2, errors.New("--n has no effect with --interpolate (it draws one row: A, --lambda-steps+1 mixtures, B); drop --n"))
	}
	for _, f := range []string{"lambda-steps", "interpolate-t"} {
		if o.given[f] && len(o.interpolate) == 0 {
			return withExit(2, fmt.Errorf("--%s has no effect without --interpolate", f))
		}
	}
	return nil
}

// interruptible runs f, turning an interruption panic of a progress callback into its value.
func interruptible(f func()) (in *interruption) {
	defer func() {
		if r := recover(); r != nil {
			i, ok := r.(interruption)
			if !ok {
				panic(r)
			}
			in = &i
		}
	}()
	f()
	return nil
}

// damagedNewerWarning is the warning of command (as "ddpm sample") that loaded step used of
// file as the newest checkpoint that verifies (no --step), when file holds newer ones: they were
// passed over because they do not verify, and the line says so, since the output is then not of
// the run's newest weights:
//
//	ddpm sample: warning: step 60 of runs/a/trainer-0/checkpoints.db is damaged; this used step 50, the newest that verifies (ddpm checkpoint verify runs/a/trainer-0/checkpoints.db names the damage)
//
// "" when no step is newer, or the file cannot be read again.
func damagedNewerWarning(command, file string, used int64) string {
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return ""
	}
	defer st.Close()
	list, err := st.List()
	if err != nil {
		return ""
	}
	var newer []string
	for _, in := range list {
		if in.Step > used {
			newer = append(newer, fmt.Sprint(in.Step))
		}
	}
	if len(newer) == 0 {
		return ""
	}
	what := "step " + newer[0] + " of " + file + " is"
	if len(newer) > 1 {
		what = "steps " + strings.Join(newer, ", ") + " of " + file + " are"
	}
	return fmt.Sprintf("%s: warning: %s damaged; this used step %d, the newest that verifies (ddpm checkpoint verify %s names the damage)", command, what, used, shellWord(file))
}

// sampleGrid is what `ddpm local` calls at the end of a run.
func sampleGrid(ckpt string, step int64, n int, seed uint64, out, model string, w io.Writer) error {
	return runSample(context.Background(), w, sampleOpts{checkpoint: ckpt, step: step, n: n, seed: seed, out: out, model: model, lambdaSteps: 8, force: true, noEMAWarn: true})
}

// countNoun is "1 sample", "2 samples": n with the noun's singular or plural.
func countNoun(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// imageRange names the batch of images lo+1..lo+b of n in progress lines: "images 1-64 of 100",
// "image 1 of 1", "image 65 of 65".
func imageRange(lo, b, n int) string {
	if b == 1 {
		return fmt.Sprintf("image %d of %d", lo+1, n)
	}
	return fmt.Sprintf("images %d-%d of %d", lo+1, lo+b, n)
}

func weightsName(raw bool) string {
	if raw {
		return "raw parameters"
	}
	return "EMA"
}

// gridCols is the column count of a near-square grid of n tiles.
func gridCols(n int) int {
	c := 1
	for c*c < n {
		c++
	}
	return c
}

func runInterpolate(ctx context.Context, w io.Writer, ld *trainer.Loaded, o sampleOpts, xa, xb []float32) error {
	c, h, wd := ld.Shape()
	lambdas := make([]float64, o.lambdaSteps+1)
	for i := range lambdas {
		lambdas[i] = float64(i) / float64(o.lambdaSteps)
	}
	d := c * h * wd
	eps := make([]float32, d)
	rng.New(o.seed, rng.Stream(0, rng.PurposeNoise)).FillNormal(eps)
	t0 := time.Now()
	prog := newProgressLine(w, 10*time.Second)
	opts := diffusion.ReverseOptions{Progress: func(t int, _, _ []float32) {
		if ctx.Err() != nil {
			panic(interruption{t})
		}
		prog.Report(t == 0, "ddpm sample: interpolation: step %d of %d (%.0fs)", o.interpT+1-t, o.interpT+1, time.Since(t0).Seconds())
	}}
	x := make([]float32, 0, len(lambdas)*d)
	// Shared reverse noise: the rows differ only by lambda, as in paper Fig. 8; so the rows can
	// be denoised sampleBatch at a time.
	for lo := 0; lo < len(lambdas); lo += sampleBatch {
		part := lambdas[lo:min(lo+sampleBatch, len(lambdas))]
		in := interruptible(func() {
			x = append(x, ld.Sched.Interpolate(ld.Eps, xa, xb, eps, part, o.interpT, diffusion.SharedNoise(o.seed, rng.PurposeSampling, 0), opts)...)
		})
		if in != nil {
			prog.End()
			return withExit(exitInterrupted, fmt.Errorf("sample interrupted at step %d of %d of the interpolation; nothing was written", o.interpT+1-in.t, o.interpT+1))
		}
	}
	prog.End()
	row := append(append(append([]float32(nil), xa...), x...), xb...)
	if err := viz.WritePNG(o.out, viz.Grid(row, len(lambdas)+2, c, h, wd, len(lambdas)+2, 2)); err != nil {
		return fmt.Errorf("--out %s: %w", o.out, err)
	}
	fmt.Fprintf(w, "ddpm sample: interpolation %s -> %s at t=%d, %d weights -> %s\n", o.interpolate[0], o.interpolate[1], o.interpT, len(lambdas), o.out)
	return nil
}

// readImage reads a PNG, JPEG or WebP of exactly h x w pixels as CHW float32 in [-1, 1] (grey for one
// channel, RGB for three).
func readImage(path string, c, h, w int) ([]float32, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("--interpolate image %s does not exist", path)
	} else if err != nil {
		return nil, fmt.Errorf("--interpolate image %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("--interpolate image %s is a folder; give two image files, A.png,B.png", path)
	}
	// The header first: a huge image is refused before it is decoded.
	cfg, _, err := image.DecodeConfig(f)
	if err != nil {
		if kind := sniffFile(path); kind == kindCheckpoint || kind == kindSafetensors || kind == kindDataset {
			return nil, fmt.Errorf("--interpolate image %s is %s, not a PNG, JPEG or WebP image", path, kind)
		}
		return nil, fmt.Errorf("--interpolate image %s: not a PNG, JPEG or WebP image (%v)", path, err)
	}
	if cfg.Width != w || cfg.Height != h {
		return nil, fmt.Errorf("--interpolate image %s is %dx%d, the model wants %dx%d", path, cfg.Width, cfg.Height, w, h)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("--interpolate image %s: %w", path, err)
	}
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("--interpolate image %s: not a PNG, JPEG or WebP image (%v)", path, err)
	}
	b := img.Bounds()
	x := make([]float32, c*h*w)
	for y := range h {
		for xx := range w {
			r, g, bl, _ := img.At(b.Min.X+xx, b.Min.Y+y).RGBA()
			if c == 1 {
				lum := (299*r + 587*g + 114*bl) / 1000 >> 8
				x[y*w+xx] = float32(lum)/127.5 - 1
				continue
			}
			x[y*w+xx] = float32(r>>8)/127.5 - 1
			x[h*w+y*w+xx] = float32(g>>8)/127.5 - 1
			x[2*h*w+y*w+xx] = float32(bl>>8)/127.5 - 1
		}
	}
	return x, nil
}
