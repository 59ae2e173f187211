package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/diffusion"
	"ddpm/internal/rng"
	"ddpm/nn"
	"ddpm/optim"
	"ddpm/trainer"
	"ddpm/unet"
)

const modelExitUsage = 2

// unknownModelPreset is the line of a U-Net preset name unet.Preset refused (err), given as
// what ("--preset", "model info NAME"): a run preset's name (mnist, celebahq, lsun-church) gets
// the U-Net it trains, a near miss the names it is near, any other err (naming the known ones):
//
//	model info mnist: mnist is a run preset (ddpm local --preset mnist); its U-Net is tiny: ddpm model info tiny
//	model info tinyy: no U-Net preset "tinyy"; did you mean tiny? (known: celebahq256, cifar10, lsun256, small, tiny)
func unknownModelPreset(what, name string, err error) error {
	if run, rerr := config.Preset(name); rerr == nil {
		return fmt.Errorf("%s: %s is a run preset (ddpm local --preset %s); its U-Net is %s: ddpm model info %s", what, name, name, run.Model, run.Model)
	}
	near := config.Nearest(name, unet.PresetNames())
	known := strings.Join(unet.PresetNames(), ", ")
	if len(near) > 0 {
		return fmt.Errorf("%s: no U-Net preset %q; did you mean %s? (known: %s)", what, name, strings.Join(near, " or "), known)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// modelOfPath is the line of a "preset" given as what ("model info PATH", "--preset") that is
// a path: model info takes a U-Net preset's name, and the line names the preset of the
// checkpoint, trainer folder, run folder or safetensors weights there, with the command for it
// (it was 'unet: invalid config: unknown preset "runs/a"'). nil when nothing is at path.
//
//	model info runs/a: runs/a is a path, not a U-Net preset; its checkpoints are of U-Net tiny (runs/a/run.yaml): ddpm model info tiny
//	model info w.safetensors: w.safetensors is a path, not a U-Net preset; its weights are those of U-Net tiny: ddpm model info tiny
func modelOfPath(what, path string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	known := strings.Join(unet.PresetNames(), ", ")
	if sniffFile(path) == kindRunConfig {
		if run, err := config.Load(path); err == nil && run.Model != "" {
			return fmt.Errorf("%s: %s is a path, not a U-Net preset; it is a run config of U-Net %s: ddpm model info %s", what, path, run.Model, run.Model)
		}
	}
	if sniffFile(path) == kindSafetensors {
		if names, err := unet.PresetsOfWeights(path); err == nil && len(names) > 0 {
			return fmt.Errorf("%s: %s is a path, not a U-Net preset; its weights are those of U-Net %s: ddpm model info %s", what, path, strings.Join(names, " or "), names[0])
		}
	} else if er, err := resolveEvalRun(path, ""); err == nil {
		return fmt.Errorf("%s: %s is a path, not a U-Net preset; its checkpoints are of U-Net %s (%s): ddpm model info %s", what, path, er.run.Model, er.cfgPath, er.run.Model)
	} else if model := checkpointModel(path); model != "" {
		// A checkpoint file without its run.yaml (a copy ddpm checkpoint fetch made): the
		// model its newest checkpoint names.
		return fmt.Errorf("%s: %s is a path, not a U-Net preset; its checkpoints are of U-Net %s: ddpm model info %s", what, path, model, model)
	}
	return fmt.Errorf("%s: %s is a path, not a U-Net preset (known: %s)", what, path, known)
}

// checkpointModel is the U-Net preset the newest readable checkpoint in the checkpoint file at
// path (or in a folder's, trainer.CheckpointFileIn) names, "" when there is none to read.
func checkpointModel(path string) string {
	file, err := trainer.CheckpointFileIn(path)
	if err != nil || sniffFile(file) != kindCheckpoint {
		return ""
	}
	list, _ := listCheckpointsNow(file)
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].Err == nil && list[i].Preset != "" {
			return list[i].Preset
		}
	}
	return ""
}

// listCheckpointsNow is the List of the checkpoint file at file (every stored checkpoint in step
// order, from its headers), opened read-only for a hint in a message: it waits at most 100 ms
// for a live process's lock; ok is false when the file cannot be opened or listed.
func listCheckpointsNow(file string) (list []checkpoint.Info, ok bool) {
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true, LockTimeout: 100 * time.Millisecond})
	if err != nil {
		return nil, false
	}
	defer st.Close()
	list, err = st.List()
	return list, err == nil
}

var modelCmd = &cobra.Command{
	Use:   "model",
	Short: "Inspect and time the U-Net (eps_theta) presets",
}

// modelFlagAlias lets the model commands take --model for their --preset: every other command
// names the U-Net preset --model (and a dataset preset --preset), so --model tiny is what a
// user of sample, eval or local types here too.
func modelFlagAlias(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	if name == "model" {
		name = "preset"
	}
	return pflag.NormalizedName(name)
}

func init() {
	var preset string
	info := &cobra.Command{
		Use:   "info [PRESET]",
		Short: "Print a preset's architecture and exact parameter count",
		Long: `info prints the U-Net preset's layout, input and output shape, channels, attention
resolutions and exact parameter count. The preset is the argument or --preset (` + strings.Join(unet.PresetNames(), ", ") + `).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			what := "--preset"
			if len(args) == 1 {
				if cmd.Flags().Changed("preset") && preset != args[0] {
					return withExit(modelExitUsage, fmt.Errorf("model info %s --preset %s: name the preset once", args[0], preset))
				}
				preset, what = args[0], "model info "+args[0]
			}
			cfg, err := unet.Preset(preset)
			if err != nil {
				if line := modelOfPath(what, preset); line != nil {
					return withExit(modelExitUsage, line)
				}
				return withExit(modelExitUsage, unknownModelPreset(what, preset, err))
			}
			return writeModelInfo(cmd.OutOrStdout(), preset, cfg)
		},
	}
	info.Flags().StringVar(&preset, "preset", "cifar10", "model preset (--model is the same flag): "+strings.Join(unet.PresetNames(), ", "))

	var bf benchFlags
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Time the train step, the forward pass or the sampling step; one JSON line",
		Long: `Times one step on synthetic data x0 ~ U[-1, 1], as bench/pytorch_engine.py does in PyTorch:
  train:   t and eps drawn per step, q_sample, forward in training mode (dropout on), L_simple,
           backward, global-norm clipping to 1.0 and Adam (lr 2e-4)
  forward: forward in training mode (dropout on) and L_simple, no backward (drawing t, eps
           and q_sample untimed, as the anchor's forward phase); the model keeps no
           backward-pass state (unet SetInference), as PyTorch under no_grad
  sample:  one reverse-process step (Algorithm 2, as diffusion.Schedule.Denoise: forward in
           evaluation mode, inference buffers, fixed-large variance, clipped x0), t counting
           down from T-1
Prints one JSON line with each step's wall time and CPU time (user + system of all threads,
getrusage), their medians, the parameter count and the peak RSS. "ddpm model compare" runs it
alternately with the PyTorch twin and prints the ratios.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := unet.Preset(bf.preset)
			if err != nil {
				return withExit(modelExitUsage, fmt.Errorf("--preset: %w", err))
			}
			if bf.batch < 1 || bf.steps < 1 || bf.warmup < 0 {
				return withExit(modelExitUsage, fmt.Errorf("--batch %d, --steps %d, --warmup %d: want batch, steps >= 1 and warmup >= 0", bf.batch, bf.steps, bf.warmup))
			}
			if bf.batch > maxEvalBatch {
				return withExit(modelExitUsage, fmt.Errorf("--batch %d: at most %d images per model evaluation", bf.batch, maxEvalBatch))
			}
			if !slices.Contains(benchModes, bf.mode) {
				return withExit(modelExitUsage, fmt.Errorf("--mode %q: want one of %s", bf.mode, strings.Join(benchModes, ", ")))
			}
			return runModelBench(cmd.OutOrStdout(), cfg, bf)
		},
	}
	bench.Flags().StringVar(&bf.preset, "preset", "small", "model preset (--model is the same flag): "+strings.Join(unet.PresetNames(), ", "))
	bench.Flags().StringVar(&bf.mode, "mode", "train", "what one step is: "+strings.Join(benchModes, ", "))
	bench.Flags().IntVar(&bf.batch, "batch", 16, "images per step")
	bench.Flags().IntVar(&bf.warmup, "warmup", 2, "untimed steps first")
	bench.Flags().IntVar(&bf.steps, "steps", 10, "timed steps")
	var cf compareFlags
	compare := &cobra.Command{
		Use:   "compare",
		Short: "Run our step and PyTorch's (bench/pytorch_engine.py) alternately; print wall and CPU ratios, peak RSS",
		Long: `Each round runs "ddpm model bench" and then the PyTorch twin (bench/pytorch_engine.py, which
imports the anchor's models from anchors/pytorch/unet_bench.py), each in its own process with
the same number of threads (GOMAXPROCS=N; torch.set_num_threads(N)), and reads their JSON lines.
The summary gives, for each side, the median wall time and the median CPU time (user + system
of all threads) over all timed steps, the ratios ours/PyTorch and each side's peak RSS (the
children's maxrss). The machine is shared: wall time depends on the load, CPU time much less,
so the CPU ratio is the one to read on a busy machine. The PyTorch twins:
small (SmallUNet), cifar10 (DDPMUNet) and tiny (SmallUNet's layout at the tiny size).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			twin, ok := map[string]string{"small": "small", "cifar10": "ddpm", "tiny": "tiny"}[cf.preset]
			if !ok {
				return withExit(modelExitUsage, fmt.Errorf("--preset %q: only tiny, small and cifar10 have a PyTorch twin", cf.preset))
			}
			if cf.rounds < 1 || cf.batch < 1 || cf.steps < 1 || cf.warmup < 0 || cf.threads < 1 {
				return withExit(modelExitUsage, fmt.Errorf("--rounds %d, --batch %d, --steps %d, --warmup %d, --threads %d: want rounds, batch, steps, threads >= 1 and warmup >= 0", cf.rounds, cf.batch, cf.steps, cf.warmup, cf.threads))
			}
			if cf.batch > maxEvalBatch {
				return withExit(modelExitUsage, fmt.Errorf("--batch %d: at most %d images per model evaluation", cf.batch, maxEvalBatch))
			}
			if !slices.Contains(benchModes, cf.mode) {
				return withExit(modelExitUsage, fmt.Errorf("--mode %q: want one of %s", cf.mode, strings.Join(benchModes, ", ")))
			}
			if err := checkCompareFiles(&cf); err != nil {
				return withExit(modelExitUsage, err)
			}
			return runModelCompare(cmd.OutOrStdout(), cmd.ErrOrStderr(), twin, cf)
		},
	}
	compare.Flags().StringVar(&cf.preset, "preset", "small", "tiny, small or cifar10 (--model is the same flag)")
	compare.Flags().StringVar(&cf.mode, "mode", "train", "what one step is: "+strings.Join(benchModes, ", "))
	compare.Flags().IntVar(&cf.batch, "batch", 16, "images per step")
	compare.Flags().IntVar(&cf.warmup, "warmup", 2, "untimed steps per process")
	compare.Flags().IntVar(&cf.steps, "steps", 10, "timed steps per process")
	compare.Flags().IntVar(&cf.rounds, "rounds", 2, "alternations (ours, then PyTorch)")
	compare.Flags().IntVar(&cf.threads, "threads", 2, "threads of each side (GOMAXPROCS; torch.set_num_threads)")
	compare.Flags().StringVar(&cf.python, "python", "/usr/bin/python3", "Python with Debian's python3-torch")
	compare.Flags().StringVar(&cf.script, "pytorch-script", "bench/pytorch_engine.py", "the PyTorch twin (the default is relative to the repository's root)")
	compare.Flags().StringVar(&cf.anchors, "anchors", "", "the PyTorch anchor's folder, which holds unet_bench.py (default: shared/anchors/pytorch two folders above --pytorch-script, beside the repository)")
	for _, c := range []*cobra.Command{info, bench, compare} {
		c.Flags().SetNormalizeFunc(modelFlagAlias)
	}
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

// benchModes are the steps "model bench" can time.
var benchModes = []string{"train", "forward", "sample"}

type benchFlags struct {
	preset, mode         string
	batch, warmup, steps int
}

type benchResult struct {
	Impl       string    `json:"impl"`
	Model      string    `json:"model"`
	Mode       string    `json:"mode"`
	Batch      int       `json:"batch"`
	Params     int       `json:"params"`
	BLAS       string    `json:"blas"`
	BLASCore   string    `json:"blas_core"`
	Threads    int       `json:"threads"`
	Median     float64   `json:"s_per_step_median"`
	CPUMedian  float64   `json:"cpu_s_per_step_median"`
	Times      []float64 `json:"times"`
	CPU        []float64 `json:"cpu"`
	FirstLoss  float64   `json:"first_loss,omitempty"`
	LastLoss   float64   `json:"last_loss,omitempty"`
	PeakRSSMiB float64   `json:"peak_rss_mib"`
}

// cpuSeconds is the CPU time (user + system, all threads) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
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
	var adam *optim.Adam
	if bf.mode == "train" { // forward-only modes keep no optimizer state, as PyTorch's twin
		adam = optim.NewAdam(m.NumParams())
	} else { // nor what a backward pass needs, as PyTorch's under no_grad
		m.SetInference(true)
	}
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
	draw := func(s int) {
		for i := range b {
			p := uint64(s*b + i)
			pos[i] = p
			src.Reset(0, rng.Stream(p, rng.PurposeTimestep))
			ts[i] = int32(src.Intn(sched.T()))
			src.Reset(0, rng.Stream(p, rng.PurposeNoise))
			src.FillNormal(eps[i*d : (i+1)*d])
		}
		sched.QSample(xt, x0, eps, ts, b)
	}
	meanLoss := func() float64 {
		var l float64
		for _, v := range losses {
			l += v
		}
		return l / float64(b)
	}
	prep := func(int) {} // untimed set-up of a step (the anchor times forward passes alone)
	var step func(s int) float64
	switch bf.mode {
	case "train":
		step = func(s int) float64 {
			draw(s)
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
			return meanLoss()
		}
	case "forward":
		prep = draw
		step = func(s int) float64 {
			diffusion.LSimple(losses, eps, m.Forward(xt, ts, b, key), b)
			return meanLoss()
		}
	case "sample":
		// The body of diffusion.Schedule.Denoise, one timestep per call: x starts as x_T.
		x, predX0, z := xt, grad, eps
		diffusion.StreamNoise(0, rng.PurposeSampling, 0)(x, sched.T(), b)
		noise := diffusion.StreamNoise(0, rng.PurposeSampling, 0)
		step = func(s int) float64 {
			tc := sched.T() - 1 - s%sched.T()
			for i := range ts {
				ts[i] = int32(tc)
			}
			out := m.Forward(x, ts, b, nil)
			if tc > 0 {
				noise(z, tc, b)
			}
			sched.PSample(x, predX0, x, out, z, ts, b, diffusion.ReverseOptions{})
			return 0
		}
	}
	res := benchResult{Impl: "go", Model: bf.preset, Mode: bf.mode, Batch: b, Params: m.NumParams(), BLAS: nn.Backend, BLASCore: nn.BackendCore(), Threads: runtime.GOMAXPROCS(0)}
	for s := range bf.warmup + bf.steps {
		prep(s)
		start, c0 := time.Now(), cpuSeconds()
		l := step(s)
		dt, dc := time.Since(start).Seconds(), cpuSeconds()-c0
		if s == 0 {
			res.FirstLoss = l
		}
		res.LastLoss = l
		if s >= bf.warmup {
			res.Times = append(res.Times, dt)
			res.CPU = append(res.CPU, dc)
		}
	}
	res.Median, res.CPUMedian = median(res.Times), median(res.CPU)
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
	preset, mode, python, script, anchors string
	batch, warmup, steps, rounds, threads int
}

// childRun is what compare reads from one bench process.
type childRun struct {
	times, cpu []float64
	rssMiB     float64
}

// runChild runs a bench process and returns its last JSON line's step times and its maxrss.
func runChild(stderr io.Writer, env []string, name string, args ...string) (childRun, error) {
	c := exec.Command(name, args...)
	c.Env = env
	c.Stderr = stderr
	out, err := c.Output()
	if err != nil {
		return childRun{}, fmt.Errorf("%s: %w", name, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var r struct {
		Times []float64 `json:"times"`
		CPU   []float64 `json:"cpu"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil || len(r.Times) == 0 || len(r.CPU) != len(r.Times) {
		return childRun{}, fmt.Errorf("%s: no step times in its output %q", name, lines[len(lines)-1])
	}
	run := childRun{times: r.Times, cpu: r.CPU}
	if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
		run.rssMiB = float64(ru.Maxrss) / 1024 // kilobytes on Linux
	}
	return run, nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if k := len(s); k%2 == 1 {
		return s[k/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// checkCompareFiles refuses, in one line each, what would otherwise end model compare with a
// Python traceback or a fork/exec error after our first timed process: a --pytorch-script that is
// not there (the default is relative to the repository's root, so any other working folder), a
// --python that is not there, and an anchor folder without unet_bench.py, which the script
// imports its models from. An empty cf.anchors is set to the script's own default,
// SCRIPT_DIR/../../shared/anchors/pytorch.
func checkCompareFiles(cf *compareFlags) error {
	if _, err := os.Stat(cf.script); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("--pytorch-script %s: no such file (the default is relative to the repository's root: run ddpm model compare there, or give --pytorch-script PATH)", cf.script)
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("--pytorch-script %s: %v", cf.script, err)
	}
	if _, err := exec.LookPath(cf.python); err != nil {
		return fmt.Errorf("--python %s: no such program (the PyTorch side needs a Python with torch: Debian's python3-torch, /usr/bin/python3; make bench-engine installs it)", cf.python)
	}
	if cf.anchors == "" {
		cf.anchors = filepath.Join(filepath.Dir(cf.script), "..", "..", "shared", "anchors", "pytorch")
	}
	if _, err := os.Stat(filepath.Join(cf.anchors, "unet_bench.py")); err != nil {
		return fmt.Errorf("--anchors %s: no unet_bench.py there (the PyTorch anchor the twin imports its models from; give --anchors DIR, the folder that holds it)", filepath.Clean(cf.anchors))
	}
	return nil
}

func runModelCompare(w, stderr io.Writer, twin string, cf compareFlags) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	n := strconv.Itoa
	th := n(cf.threads)
	env := append(os.Environ(), "GOMAXPROCS="+th, "OMP_NUM_THREADS="+th, "OPENBLAS_NUM_THREADS="+th)
	var ours, theirs childRun
	for r := range cf.rounds {
		o, err := runChild(stderr, env, self, "model", "bench", "--preset", cf.preset, "--mode", cf.mode,
			"--batch", n(cf.batch), "--warmup", n(cf.warmup), "--steps", n(cf.steps))
		if err != nil {
			return err
		}
		t, err := runChild(stderr, env, cf.python, cf.script, "--anchors", cf.anchors, "--model", twin, "--mode", cf.mode,
			"--batch", n(cf.batch), "--warmup", n(cf.warmup), "--steps", n(cf.steps), "--threads", th)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "round %d: ours %.3f s/step (CPU %.3f s), pytorch %.3f s/step (CPU %.3f s)\n",
			r+1, median(o.times), median(o.cpu), median(t.times), median(t.cpu))
		ours.times, ours.cpu, ours.rssMiB = append(ours.times, o.times...), append(ours.cpu, o.cpu...), max(ours.rssMiB, o.rssMiB)
		theirs.times, theirs.cpu, theirs.rssMiB = append(theirs.times, t.times...), append(theirs.cpu, t.cpu...), max(theirs.rssMiB, t.rssMiB)
	}
	mo, mt := median(ours.times), median(theirs.times)
	co, ct := median(ours.cpu), median(theirs.cpu)
	fmt.Fprintf(w, "%s %s batch %d, %d threads (%s BLAS, %s kernels), n=%d steps each:\n", cf.preset, cf.mode, cf.batch, cf.threads, nn.Backend, nn.BackendCore(), len(ours.times))
	fmt.Fprintf(w, "  wall  ours %.3f s/step, pytorch %.3f s/step, ratio ours/pytorch %.2f\n", mo, mt, mo/mt)
	fmt.Fprintf(w, "  CPU   ours %.3f s/step, pytorch %.3f s/step, ratio ours/pytorch %.2f\n", co, ct, co/ct)
	fmt.Fprintf(w, "  peak RSS ours %.0f MiB, pytorch %.0f MiB\n", ours.rssMiB, theirs.rssMiB)
	return nil
}
