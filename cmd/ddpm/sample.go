package main

import (
	"errors"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	_ "image/jpeg"
	_ "image/png"

	"github.com/spf13/cobra"

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
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runSample(cmd.ErrOrStderr(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.checkpoint, "checkpoint", "", "checkpoint file, trainer folder or run folder (required)")
	f.Int64Var(&o.step, "step", -1, "checkpoint step (default: the latest verified)")
	f.IntVar(&o.n, "n", 64, "number of samples")
	f.Uint64Var(&o.seed, "seed", 0, "seed of the sampling noise")
	f.StringVar(&o.out, "out", "", "output PNG grid (required)")
	f.StringVar(&o.progressive, "progressive", "", "also write the predicted x0 along the chain to this PNG")
	f.IntVar(&o.every, "every", 100, "with --progressive: record every this many steps")
	f.StringSliceVar(&o.interpolate, "interpolate", nil, "two images A.png,B.png to interpolate between (paper Fig. 8)")
	f.IntVar(&o.lambdaSteps, "lambda-steps", 8, "with --interpolate: mixing weights 0..1 in this many intervals")
	f.IntVar(&o.interpT, "interpolate-t", 500, "with --interpolate: the timestep both images are diffused to")
	f.BoolVar(&o.raw, "raw", false, "use the raw parameters instead of the EMA")
	f.StringVar(&o.model, "model", "", "expected U-Net preset; refuse a checkpoint of another one")
	f.StringVar(&o.export, "export-weights", "", "write the loaded weights (EMA unless --raw) as safetensors with PyTorch names; with no --out, only that")
	f.BoolVar(&o.force, "force", false, "replace output files that already exist")
	return cmd
}

func init() { rootCmd.AddCommand(newSampleCmd()) }

func runSample(w io.Writer, o sampleOpts) error {
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
	}
	// Refuse an output nobody can write before minutes or hours of sampling, not after.
	for _, out := range []struct{ flag, path string }{{"--out", o.out}, {"--progressive", o.progressive}, {"--export-weights", o.export}} {
		if err := checkOutPath(out.flag, out.path, o.force); err != nil {
			return withExit(2, err)
		}
	}
	if o.model != "" && !slices.Contains(config.Models, o.model) {
		return withExit(2, fmt.Errorf("--model %q is not a U-Net preset (known: %s)", o.model, strings.Join(config.Models, ", ")))
	}
	ld, err := trainer.LoadForEval(o.checkpoint, o.step, !o.raw, o.model)
	if err != nil {
		return withExit(2, err)
	}
	if o.export != "" {
		meta := map[string]string{"model": ld.Run.Model, "step": fmt.Sprint(ld.Step), "weights": weightsName(o.raw), "config_hash": ld.Run.Hash()}
		if err := unet.WriteSafetensors(o.export, ld.Model.Tensors(), ld.Model.Params(), meta); err != nil {
			return err
		}
		fmt.Fprintf(w, "ddpm sample: wrote the %s of %s step %d to %s\n", weightsName(o.raw), ld.Path, ld.Step, o.export)
		if o.out == "" {
			return nil
		}
	}
	if len(o.interpolate) == 2 {
		return runInterpolate(w, ld, o)
	}
	if o.progressive != "" {
		if o.every < 1 || o.every > ld.Sched.T() {
			return withExit(2, fmt.Errorf("--every %d: want 1..%d", o.every, ld.Sched.T()))
		}
	}
	t0 := time.Now()
	c, h, wd := ld.Shape()
	sh := diffusion.Shape{o.n, c, h, wd}
	noise := diffusion.StreamNoise(o.seed, rng.PurposeSampling, 0)
	var x []float32
	if o.progressive != "" {
		p := ld.Sched.SampleProgressive(ld.Eps, sh, noise, o.every, diffusion.ReverseOptions{})
		x = p.X0
		// One row per sample: the predicted x0 at each recorded step, then the final sample.
		cols := len(p.Steps) + 1
		d := c * h * wd
		tiles := make([]float32, 0, o.n*cols*d)
		for b := range o.n {
			for i := range p.Steps {
				tiles = append(tiles, p.PredX0[i][b*d:(b+1)*d]...)
			}
			tiles = append(tiles, x[b*d:(b+1)*d]...)
		}
		if err := viz.WritePNG(o.progressive, viz.Grid(tiles, o.n*cols, c, h, wd, cols, 2)); err != nil {
			return err
		}
	} else {
		x = ld.Sched.Sample(ld.Eps, sh, noise, diffusion.ReverseOptions{})
	}
	if err := viz.WritePNG(o.out, viz.Grid(x, o.n, c, h, wd, gridCols(o.n), 2)); err != nil {
		return err
	}
	fmt.Fprintf(w, "ddpm sample: %d samples of %s step %d (%s) in %.1fs -> %s\n", o.n, ld.Path, ld.Step, weightsName(o.raw), time.Since(t0).Seconds(), o.out)
	return nil
}

// sampleGrid is what `ddpm local` calls at the end of a run.
func sampleGrid(ckpt string, step int64, n int, seed uint64, out, model string, w io.Writer) error {
	return runSample(w, sampleOpts{checkpoint: ckpt, step: step, n: n, seed: seed, out: out, model: model, lambdaSteps: 8, force: true})
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

func runInterpolate(w io.Writer, ld *trainer.Loaded, o sampleOpts) error {
	c, h, wd := ld.Shape()
	xa, err := readImage(o.interpolate[0], c, h, wd)
	if err != nil {
		return withExit(2, err)
	}
	xb, err := readImage(o.interpolate[1], c, h, wd)
	if err != nil {
		return withExit(2, err)
	}
	if o.interpT < 0 || o.interpT >= ld.Sched.T() {
		return withExit(2, fmt.Errorf("--interpolate-t %d: want 0..%d", o.interpT, ld.Sched.T()-1))
	}
	lambdas := make([]float64, o.lambdaSteps+1)
	for i := range lambdas {
		lambdas[i] = float64(i) / float64(o.lambdaSteps)
	}
	d := c * h * wd
	eps := make([]float32, d)
	rng.New(o.seed, rng.Stream(0, rng.PurposeNoise)).FillNormal(eps)
	// Shared reverse noise: the rows differ only by lambda, as in paper Fig. 8.
	x := ld.Sched.Interpolate(ld.Eps, xa, xb, eps, lambdas, o.interpT, diffusion.SharedNoise(o.seed, rng.PurposeSampling, 0), diffusion.ReverseOptions{})
	row := append(append(append([]float32(nil), xa...), x...), xb...)
	if err := viz.WritePNG(o.out, viz.Grid(row, len(lambdas)+2, c, h, wd, len(lambdas)+2, 2)); err != nil {
		return err
	}
	fmt.Fprintf(w, "ddpm sample: interpolation %s -> %s at t=%d, %d weights -> %s\n", o.interpolate[0], o.interpolate[1], o.interpT, len(lambdas), o.out)
	return nil
}

// readImage reads a PNG or JPEG of exactly h x w pixels as CHW float32 in [-1, 1] (grey for one
// channel, RGB for three).
func readImage(path string, c, h, w int) ([]float32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b := img.Bounds()
	if b.Dx() != w || b.Dy() != h {
		return nil, fmt.Errorf("%s: image is %dx%d, the model wants %dx%d", path, b.Dx(), b.Dy(), w, h)
	}
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

// checkOutPath: an output file (empty: none) must not be a directory, must not exist unless
// force (nothing is overwritten by accident), and its folder must exist.
func checkOutPath(flag, path string, force bool) error {
	if path == "" {
		return nil
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%s %s is a directory, not a file", flag, path)
	} else if err == nil && !force {
		return fmt.Errorf("%s %s already exists (give --force to replace it)", flag, path)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s %s: folder %s does not exist", flag, path, dir)
	}
	return nil
}
