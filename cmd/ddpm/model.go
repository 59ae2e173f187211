package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ddpm/diffusion"
	"ddpm/internal/rng"
	"ddpm/nn"
	"ddpm/optim"
	"ddpm/unet"
)

const modelExitUsage = 2

var modelCmd = &cobra.Command{
	Use:   "model",
	Short: "Inspect and time the U-Net (eps_theta) presets",
}

func init() {
	var preset string
	info := &cobra.Command{
		Use:   "info",
		Short: "Print a preset's architecture and exact parameter count",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := unet.Preset(preset)
			if err != nil {
				return withExit(modelExitUsage, fmt.Errorf("--preset: %w", err))
			}
			return writeModelInfo(cmd.OutOrStdout(), preset, cfg)
		},
	}
	info.Flags().StringVar(&preset, "preset", "cifar10", "model preset: "+strings.Join(unet.PresetNames(), ", "))

	var bf benchFlags
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Time the train step (q_sample + forward + L_simple + backward + clip + Adam); one JSON line",
		Long: `Times the same step as anchors/pytorch/unet_bench.py on synthetic data x0 ~ U[-1, 1]:
t and eps drawn per step, q_sample, forward in training mode (dropout on), L_simple,
backward, global-norm clipping to 1.0 and Adam (lr 2e-4). Prints one JSON line with the
median and all step times, the parameter count and the peak RSS. make bench-engine runs it
alternately with PyTorch's script and prints the ratio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := unet.Preset(bf.preset)
			if err != nil {
				return withExit(modelExitUsage, fmt.Errorf("--preset: %w", err))
			}
			if bf.batch < 1 || bf.steps < 1 || bf.warmup < 0 {
				return withExit(modelExitUsage, fmt.Errorf("--batch %d, --steps %d, --warmup %d: want batch, steps >= 1 and warmup >= 0", bf.batch, bf.steps, bf.warmup))
			}
			return runModelBench(cmd.OutOrStdout(), cfg, bf)
		},
	}
	bench.Flags().StringVar(&bf.preset, "preset", "small", "model preset: "+strings.Join(unet.PresetNames(), ", "))
	bench.Flags().IntVar(&bf.batch, "batch", 16, "images per step")
	bench.Flags().IntVar(&bf.warmup, "warmup", 2, "untimed steps first")
	bench.Flags().IntVar(&bf.steps, "steps", 10, "timed steps")
	var cf compareFlags
	compare := &cobra.Command{
		Use:   "compare",
		Short: "Run our train step and PyTorch's (anchors/pytorch/unet_bench.py) alternately; print medians, ratio, peak RSS",
		Long: `Each round runs "ddpm model bench" and then the PyTorch anchor script, each in its own
process (2 threads each: GOMAXPROCS=2, torch.set_num_threads(2)), and reads their JSON lines.
The summary gives the median over all timed steps of each side, the ratio ours/PyTorch and each
side's peak RSS (the children's maxrss). Only small and cifar10 have a PyTorch twin. The
machine is shared: the ratio is meaningful only when the two sides ran under the same load,
which alternating in one run is meant to give (DECISIONS.md D3).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			anchor, ok := map[string]string{"small": "small", "cifar10": "ddpm"}[cf.preset]
			if !ok {
				return withExit(modelExitUsage, fmt.Errorf("--preset %q: only small and cifar10 have a PyTorch twin", cf.preset))
			}
			if cf.rounds < 1 || cf.batch < 1 || cf.steps < 1 || cf.warmup < 0 {
				return withExit(modelExitUsage, fmt.Errorf("--rounds %d, --batch %d, --steps %d, --warmup %d: want rounds, batch, steps >= 1", cf.rounds, cf.batch, cf.steps, cf.warmup))
			}
			if _, err := os.Stat(cf.script); err != nil {
				return withExit(modelExitUsage, fmt.Errorf("--pytorch-script: %w", err))
			}
			return runModelCompare(cmd.OutOrStdout(), cmd.ErrOrStderr(), anchor, cf)
		},
	}
	compare.Flags().StringVar(&cf.preset, "preset", "small", "small or cifar10")
	compare.Flags().IntVar(&cf.batch, "batch", 16, "images per step")
	compare.Flags().IntVar(&cf.warmup, "warmup", 2, "untimed steps per process")
	compare.Flags().IntVar(&cf.steps, "steps", 10, "timed steps per process")
	compare.Flags().IntVar(&cf.rounds, "rounds", 2, "alternations (ours, then PyTorch)")
	compare.Flags().StringVar(&cf.python, "python", "/usr/bin/python3", "Python with Debian's python3-torch")
	compare.Flags().StringVar(&cf.script, "pytorch-script", "../shared/anchors/pytorch/unet_bench.py", "the PyTorch anchor")
	modelCmd.AddCommand(info, bench, compare)
	rootCmd.AddCommand(modelCmd)
}

func writeModelInfo(w io.Writer, name string, cfg unet.Config) error {
	n, err := unet.NumParams(cfg)
	if err != nil {
		return err
	}
	ints := func(v []int) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ",")
	}
	fmt.Fprintf(w, "preset          %s\n", name)
	fmt.Fprintf(w, "layout          %s\n", cfg.Layout)
	fmt.Fprintf(w, "input           %d x %d x %d\n", cfg.InCh, cfg.Resolution, cfg.Resolution)
	fmt.Fprintf(w, "output          %d x %d x %d (eps_theta)\n", cfg.OutCh, cfg.Resolution, cfg.Resolution)
	fmt.Fprintf(w, "ch              %d (time embedding: sinusoidal %d -> %d -> %d)\n", cfg.Ch, cfg.Ch, 4*cfg.Ch, 4*cfg.Ch)
	fmt.Fprintf(w, "ch_mult         %s\n", ints(cfg.ChMult))
	fmt.Fprintf(w, "num_res_blocks  %d\n", cfg.NumResBlocks)
	fmt.Fprintf(w, "attention at    %s\n", ints(cfg.AttnResolutions))
	fmt.Fprintf(w, "dropout         %g\n", cfg.Dropout)
	fmt.Fprintf(w, "groupnorm       %d groups, eps %g\n", cfg.Groups, cfg.GNEps)
	fmt.Fprintf(w, "levels:\n")
	for i, m := range cfg.ChMult {
		r := cfg.Resolution >> i
		attn := ""
		if slices.Contains(cfg.AttnResolutions, r) {
			attn = " + attention"
		}
		fmt.Fprintf(w, "  %d  %3dx%-3d  %4d channels%s\n", i, r, r, cfg.Ch*m, attn)
	}
	fmt.Fprintf(w, "parameters      %s (%d)\n", groupThousands(n), n)
	return nil
}

func groupThousands(n int) string {
	s := strconv.Itoa(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

type benchFlags struct {
	preset               string
	batch, warmup, steps int
}

type benchResult struct {
	Impl       string    `json:"impl"`
	Model      string    `json:"model"`
	Batch      int       `json:"batch"`
	Params     int       `json:"params"`
	BLAS       string    `json:"blas"`
	Threads    int       `json:"threads"`
	Median     float64   `json:"train_s_per_step_median"`
	Min        float64   `json:"train_s_per_step_min"`
	Times      []float64 `json:"train_times"`
	FirstLoss  float64   `json:"first_loss"`
	LastLoss   float64   `json:"last_loss"`
	PeakRSSMiB float64   `json:"peak_rss_mib"`
}

func runModelBench(w io.Writer, cfg unet.Config, bf benchFlags) error {
	m, err := unet.New(cfg)
	if err != nil {
		return err
	}
	m.Init(0)
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		return err
	}
	adam := optim.NewAdam(m.NumParams())
	b := bf.batch
	d := cfg.InCh * cfg.Resolution * cfg.Resolution
	x0, xt, eps, grad := make([]float32, b*d), make([]float32, b*d), make([]float32, b*d), make([]float32, b*d)
	src := rng.New(0, 0)
	for i := range x0 {
		x0[i] = float32(2*src.Float64() - 1)
	}
	ts := make([]int32, b)
	pos := make([]uint64, b)
	losses := make([]float64, b)
	key := &unet.DropoutKey{Seed: 0, Positions: pos}
	step := func(s int) float64 {
		for i := range b {
			p := uint64(s*b + i)
			pos[i] = p
			src.Reset(0, rng.Stream(p, rng.PurposeTimestep))
			ts[i] = int32(src.Intn(sched.T()))
			src.Reset(0, rng.Stream(p, rng.PurposeNoise))
			src.FillNormal(eps[i*d : (i+1)*d])
		}
		sched.QSample(xt, x0, eps, ts, b)
		pred := m.Forward(xt, ts, b, key)
		diffusion.LSimple(losses, eps, pred, b)
		diffusion.LSimpleGrad(grad, eps, pred, b)
		for i := range grad {
			grad[i] /= float32(b)
		}
		m.ZeroGrads()
		m.Backward(grad)
		optim.ClipGlobalNorm(m.Grads(), 1)
		adam.Update(m.Params(), m.Grads(), 2e-4)
		var l float64
		for _, v := range losses {
			l += v
		}
		return l / float64(b)
	}
	res := benchResult{Impl: "go", Model: "", Batch: b, Params: m.NumParams(), BLAS: nn.Backend, Threads: runtime.GOMAXPROCS(0)}
	res.Model = bf.preset
	for s := range bf.warmup + bf.steps {
		start := time.Now()
		l := step(s)
		dt := time.Since(start).Seconds()
		if s == 0 {
			res.FirstLoss = l
		}
		res.LastLoss = l
		if s >= bf.warmup {
			res.Times = append(res.Times, dt)
		}
	}
	sorted := slices.Clone(res.Times)
	slices.Sort(sorted)
	res.Min = sorted[0]
	if k := len(sorted); k%2 == 1 {
		res.Median = sorted[k/2]
	} else {
		res.Median = (sorted[k/2-1] + sorted[k/2]) / 2
	}
	res.PeakRSSMiB = peakRSSMiB()
	return json.NewEncoder(w).Encode(res)
}

// peakRSSMiB reads VmHWM (the resident set's high-water mark) from /proc/self/status; 0 when
// unavailable.
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

type compareFlags struct {
	preset, python, script       string
	batch, warmup, steps, rounds int
}

// runChild runs a bench process and returns its last JSON line's step times and its maxrss.
func runChild(stderr io.Writer, env []string, name string, args ...string) (times []float64, rssMiB float64, err error) {
	c := exec.Command(name, args...)
	c.Env = env
	c.Stderr = stderr
	out, err := c.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r struct {
		Times []float64 `json:"train_times"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || len(r.Times) == 0 {
		return nil, 0, fmt.Errorf("%s: no step times in its output %q", name, lines[len(lines)-1])
	}
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rssMiB = float64(ru.Maxrss) / 1024 // kilobytes on Linux
	}
	return r.Times, rssMiB, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if k := len(s); k%2 == 1 {
		return s[k/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func runModelCompare(w, stderr io.Writer, anchor string, cf compareFlags) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	env := append(os.Environ(), "GOMAXPROCS=2", "OMP_NUM_THREADS=2", "OPENBLAS_NUM_THREADS=2")
	n := func(v int) string { return strconv.Itoa(v) }
	var ours, theirs []float64
	var oursRSS, theirsRSS float64
	for r := range cf.rounds {
		t, rss, err := runChild(stderr, env, self, "model", "bench", "--preset", cf.preset, "--batch", n(cf.batch), "--warmup", n(cf.warmup), "--steps", n(cf.steps))
		if err != nil {
			return err
		}
		ours, oursRSS = append(ours, t...), max(oursRSS, rss)
		t2, rss2, err := runChild(stderr, env, cf.python, cf.script, "--model", anchor, "--batch", n(cf.batch), "--warmup", n(cf.warmup), "--steps", n(cf.steps), "--fwd-steps", "0", "--threads", "2")
		if err != nil {
			return err
		}
		theirs, theirsRSS = append(theirs, t2...), max(theirsRSS, rss2)
		fmt.Fprintf(w, "round %d: ours %.3f s/step, pytorch %.3f s/step\n", r+1, median(t), median(t2))
	}
	mo, mt := median(ours), median(theirs)
	fmt.Fprintf(w, "%s batch %d (%s BLAS): ours %.3f s/step (n=%d, peak RSS %.0f MiB), pytorch %.3f s/step (n=%d, peak RSS %.0f MiB), ratio ours/pytorch %.2f\n",
		cf.preset, cf.batch, nn.Backend, mo, len(ours), oursRSS, mt, len(theirs), theirsRSS, mo/mt)
	return nil
}
