package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/dataset"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
	"ddpm/internal/viz"
	"ddpm/trainer"
	"ddpm/unet"
)

// localOpts are the flags of `ddpm local` beyond the run config's own.
type localOpts struct {
	data         string
	trainers     int
	coordinators int
	out          string
	resume       string
	samples      int
	quiet        bool
	grace        time.Duration
	init         string
	httpTLS      bool
	liveness     time.Duration // --liveness-timeout (0: no liveness probe)
}

func newLocalCmd() *cobra.Command {
	var o localOpts
	cmd := &cobra.Command{
		Use:   "local --data mnist --trainers 2 --coordinators 3 --steps N --out runs/NAME",
		Short: "Run a whole training cluster on this machine as real processes",
		Long: `local starts raft coordinators and trainers as child processes of this binary on free
loopback ports, shows one progress bar (step, loss, images/s, ETA), keeps each process's log in
RUN/logs/, and at the end writes RUN/loss.csv, RUN/loss.png and RUN/samples.png (the EMA weights,
Algorithm 2). loss.csv has one row per step (step,loss,lr,grad_norm); a step skipped for a
non-finite gradient (no trainer updated the model) keeps its row, marked by grad_norm NaN, and
loss.png leaves it out. At the start it prints the coordinators' gRPC addresses (for ddpm status and ddpm
loss --coordinator, with --certs RUN/certs) and the dashboard's URL (with --http-tls an https
URL and a curl line with the run's certificates that reaches it). Ctrl-C, SIGTERM, closing
the terminal (SIGHUP) or an output pipe whose reader went away (| head) stops every process
cleanly; --resume RUN continues from the last committed checkpoint (of a run that finished, it
says where its results are and starts nothing). Run-config flags (--preset,
--steps, --global-batch, ... or --config FILE) override the preset that --data names.

--data is this command's shorthand: a preset name, or a dataset path from which the preset is
inferred (a path of data that fits no one preset, such as an image folder, needs --preset).
--dataset is the run config's dataset field, as ddpm trainer and ddpm coordinator take it: it
replaces the dataset of the preset or config and never chooses a preset.`,
		Args: cobra.NoArgs,
	}
	rf := config.AddFlags(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.data, "data", "mnist", "a preset name (mnist, fashion-mnist), or a dataset path whose kind names the preset (a folder ddpm dataset prepare made from mnist or fashion-mnist, CIFAR-10, LSUN church/bedroom/cat); with --preset or --config, any dataset path")
	f.IntVar(&o.trainers, "trainers", 2, "trainer processes")
	f.IntVar(&o.coordinators, "coordinators", 3, "coordinator replicas (1, 3 or 5)")
	f.StringVar(&o.out, "out", "", "run directory to create (must be empty or absent)")
	f.StringVar(&o.resume, "resume", "", "continue the run in this directory from its last committed checkpoint (a finished run: say where its results are, draw a samples.png its end missed)")
	f.IntVar(&o.samples, "samples", 64, "images in samples.png at the end (0: none)")
	f.BoolVar(&o.quiet, "quiet", false, "no progress bar and no child lines on the terminal")
	f.StringVar(&o.init, "init", "", "safetensors weights every trainer starts from (a warm start; see README, the demo)")
	f.DurationVar(&o.grace, "grace", 20*time.Second, "how long children get to stop after SIGTERM")
	f.DurationVar(&o.liveness, "liveness-timeout", 60*time.Second, "kill and restart a coordinator or trainer whose /healthz (probed as a kubelet's liveness probe does, once it has answered or started: every limit/5, 1s to 10s, each probe given as long, at most 5s) fails or gives no answer for this long: a stopped or wedged process (at least 5s; 0: no probe, e.g. to debug a child)")
	f.BoolVar(&o.httpTLS, "http-tls", false, "serve the coordinators' and trainers' HTTP (the dashboard, /api/*, /metrics) over HTTPS with the run's certificates, RUN/certs (--http-tls of ddpm coordinator and ddpm trainer); a resumed run keeps the choice of its first start")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runLocal(cmd, rf, o)
	}
	return cmd
}

func init() { rootCmd.AddCommand(newLocalCmd()) }

// resolveLocalRun builds the run config: --data names a preset, or a dataset path whose kind
// names the preset (presetOfDataset) unless --preset or --config names it; the run-config
// flags override. Without --min-trainers all --trainers start together.
func resolveLocalRun(cmd *cobra.Command, rf *config.Flags, o localOpts) (config.Run, error) {
	fs := cmd.Flags()
	if rf.Path == "" && !fs.Changed("preset") {
		if p, err := config.Preset(o.data); err == nil {
			if p.Dataset == "" && !fs.Changed("dataset") {
				return config.Run{}, noBuiltinData("--data", o.data)
			}
			_ = fs.Set("preset", o.data)
		} else if fs.Changed("data") {
			name, err := presetOfDataset(o.data)
			if err != nil {
				return config.Run{}, err
			}
			_ = fs.Set("preset", name)
			if !fs.Changed("dataset") {
				_ = fs.Set("dataset", o.data)
			}
		}
	} else {
		if name, _ := fs.GetString("preset"); rf.Path == "" && !fs.Changed("data") && !fs.Changed("dataset") {
			if p, err := config.Preset(name); err == nil && p.Dataset == "" {
				return config.Run{}, noBuiltinData("--preset", name)
			}
		}
		// A --config without preset: (and no --preset) takes the preset --data names to fill
		// what it leaves out, as the help says.
		if _, err := config.Preset(o.data); err == nil {
			rf.DefaultPreset = o.data
		} else if fs.Changed("data") {
			if name, err := presetOfDataset(o.data); err == nil {
				rf.DefaultPreset = name
			}
		}
		if fs.Changed("data") && !fs.Changed("dataset") {
			_ = fs.Set("dataset", o.data)
		}
	}
	run, err := rf.Resolve()
	if err != nil {
		return config.Run{}, err
	}
	// A test split is named as the user typed it, before absDataset makes the path absolute.
	if err := checkTrainSplit(run.Dataset); err != nil {
		return config.Run{}, err
	}
	run.Dataset = absDataset(run.Dataset)
	switch {
	case o.trainers <= run.MaxTrainers:
	case fs.Changed("max-trainers"):
		return config.Run{}, fmt.Errorf("--trainers %d is more than --max-trainers %d", o.trainers, run.MaxTrainers)
	default:
		return config.Run{}, fmt.Errorf("--trainers %d: more than max_trainers %d of %s; give --max-trainers %d too", o.trainers, run.MaxTrainers, rf.Source(), o.trainers)
	}
	// All trainers start together unless the user asks for elasticity from the start.
	if !fs.Changed("min-trainers") {
		run.MinTrainers = o.trainers
	}
	return run, nil
}

// absDataset returns spec with a relative path made absolute (a ":train"/":test" suffix kept):
// the run's processes, --resume and ddpm sample/eval on the run folder may work in another
// directory, where the relative path names other data or none (a resume from the folder above
// the run used to open the run folder itself as the image folder). The built-in mnist and
// fashion-mnist, and a path that does not exist (refused later with the user's spelling), are
// returned as they are.
func absDataset(spec string) string {
	path := specPath(spec)
	split := spec[len(path):]
	if builtinDataset(path) || filepath.IsAbs(path) {
		return spec
	}
	if _, err := os.Stat(path); err != nil {
		return spec
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return spec
	}
	return abs + split
}

// unreadableData is the line of data (what: "--data", "dataset") that exists but that this
// user may not read: the trainers, run as this user, could not either. It was "--data D is
// neither a preset (...) nor a dataset: dataset not found: D: open D: permission denied".
//
//	--data /srv/imgs cannot be read: permission denied (the run's trainers read it as this user: give it read access)
func unreadableData(what, path string) error {
	return fmt.Errorf("%s %s cannot be read: permission denied (the run's trainers read it as this user: give it read access)", what, path)
}

// cannotRead reports whether the data spec's file or folder exists but this user may not open it
// (dataset.Open's error does not carry os.ErrPermission).
func cannotRead(spec string) bool {
	f, err := os.Open(specPath(spec))
	if err == nil {
		f.Close()
	}
	return errors.Is(err, os.ErrPermission)
}

// presetOfDataset names the preset of the dataset at path from what it holds, for `ddpm local
// --data PATH` without --preset: MNIST or Fashion-MNIST (prepared by ddpm dataset prepare from
// the built-in sources), CIFAR-10, LSUN church, bedroom or cat. Data of no single preset (an
// image folder, idx files of unknown origin) is one line asking for --preset.
func presetOfDataset(path string) (string, error) {
	if err := checkTrainSplit(path); err != nil {
		return "", err
	}
	ds, err := dataset.Open(path, dataset.Options{})
	if err != nil {
		if cannotRead(path) {
			return "", unreadableData("--data", path)
		}
		if _, serr := os.Stat(specPath(path)); errors.Is(serr, os.ErrNotExist) {
			if near := config.Nearest(path, config.Presets()); len(near) > 0 {
				return "", fmt.Errorf("--data %s is neither a preset nor a dataset (no such file or folder); did you mean %s?", path, strings.Join(near, " or "))
			}
			// dataset's own line ("dataset not found: P: no such file or directory (and not
			// one of mnist, fashion-mnist)") would say "not a preset" a second time.
			return "", fmt.Errorf("--data %s is neither a preset (%s) nor a dataset (no such file or folder)", path, strings.Join(config.Presets(), ", "))
		}
		return "", fmt.Errorf("--data %s is neither a preset (%s) nor a dataset: %w", path, strings.Join(config.Presets(), ", "), err)
	}
	info := dataset.Describe(ds)
	lsun := strings.ToLower(info.Name)
	switch {
	case strings.HasPrefix(info.Name, "mnist/"):
		return "mnist", nil
	case strings.HasPrefix(info.Name, "fashion-mnist/"):
		return "fashion-mnist", nil
	case info.Format == "cifar10-binary" || strings.HasPrefix(info.Name, "cifar10/"):
		return "cifar10", nil
	case strings.HasPrefix(lsun, "lsun/"):
		var found []string
		for _, k := range []string{"church", "bedroom", "cat"} {
			if strings.Contains(strings.TrimPrefix(lsun, "lsun/"), k) {
				found = append(found, "lsun-"+k)
			}
		}
		if len(found) == 1 {
			return found[0], nil
		}
	}
	shape := fmt.Sprintf("%dx%dx%d", info.C, info.H, info.W)
	if info.Grey {
		// A 3-channel model reads a greyscale folder too, its grey level in three planes.
		if fit := append(presetsFor(1, info.H, info.W), presetsFor(3, info.H, info.W)...); len(fit) > 0 {
			sort.Strings(fit)
			return "", fmt.Errorf("--data %s holds %s images (%s) of no one preset; give --preset NAME too (the presets whose model takes %s images, or %dx%dx%d as the grey level in three channels: %s)",
				path, shape, info.Name, shape, 3, info.H, info.W, strings.Join(fit, ", "))
		}
	}
	if fit := presetsFor(info.C, info.H, info.W); len(fit) > 0 {
		return "", fmt.Errorf("--data %s holds %s images (%s) of no one preset; give --preset NAME too (the presets whose model takes %s images: %s)",
			path, shape, info.Name, shape, strings.Join(fit, ", "))
	}
	return "", fmt.Errorf("--data %s holds %s images (%s) of no one preset; give --preset NAME too (%s)",
		path, shape, info.Name, strings.Join(config.Presets(), ", "))
}

// presetData describes the data each preset without built-in data is trained on, as --data
// takes it (noBuiltinData).
var presetData = map[string]string{
	"cifar10":      "a CIFAR-10 folder or cifar-10-binary.tar.gz",
	"lsun-church":  "an LSUN church_outdoor LMDB folder, the one holding data.mdb",
	"lsun-bedroom": "an LSUN bedroom LMDB folder, the one holding data.mdb",
	"lsun-cat":     "an LSUN cat LMDB folder, the one holding data.mdb",
	"celebahq":     "a folder of CelebA-HQ 256x256 images",
}

// noBuiltinData is the one line for a preset named by flag (--data or --preset) that ships no
// data of its own: which presets do, and what to give instead.
func noBuiltinData(flag, name string) error {
	var builtin []string
	for _, p := range config.Presets() {
		if r, err := config.Preset(p); err == nil && r.Dataset != "" {
			builtin = append(builtin, p)
		}
	}
	what, ok := presetData[name]
	if !ok {
		what = "the dataset's file or folder"
	}
	return fmt.Errorf("%s %s: the %s preset has no data built in (only %s ship theirs); give --data PATH (%s) and --preset %s",
		flag, name, name, strings.Join(builtin, " and "), what, name)
}

// presetsFor lists, sorted, the run presets whose U-Net takes c x h x w images.
func presetsFor(c, h, w int) []string {
	var fit []string
	for _, name := range config.Presets() {
		run, err := config.Preset(name)
		if err != nil {
			continue
		}
		if u, err := unet.Preset(run.Model); err == nil && u.InCh == c && u.Resolution == h && h == w {
			fit = append(fit, name)
		}
	}
	return fit
}

func runLocal(cmd *cobra.Command, rf *config.Flags, o localOpts) (retErr error) {
	if o.coordinators != 1 && o.coordinators != 3 && o.coordinators != 5 {
		return withExit(2, fmt.Errorf("--coordinators %d: want 1, 3 or 5", o.coordinators))
	}
	if o.trainers < 1 {
		return withExit(2, fmt.Errorf("--trainers %d: want at least 1", o.trainers))
	}
	if o.samples < 0 {
		return withExit(2, fmt.Errorf("--samples %d: want 0 (none) or more", o.samples))
	}
	if o.grace <= 0 {
		return withExit(2, fmt.Errorf("--grace %v: want a positive duration", o.grace))
	}
	if o.liveness < 0 || (o.liveness > 0 && o.liveness < minLiveness) {
		return withExit(2, fmt.Errorf("--liveness-timeout %v: want at least %v (a shorter limit could kill a busy process between two probes), or 0 for no liveness probe", o.liveness, minLiveness))
	}
	var (
		run  config.Run
		man  localrun.Manifest
		out  string
		lock *localrun.RunLock // held while this process runs the run
		err  error
	)
	if o.resume != "" {
		if o.out != "" && filepath.Clean(o.out) != filepath.Clean(o.resume) {
			return withExit(2, fmt.Errorf("--out %s and --resume %s name different folders", o.out, o.resume))
		}
		if rf.Given() {
			// The way to train on with other settings (more steps above all) is a new run from
			// the weights, as the README's "Resuming a finished run with more steps" says.
			w := filepath.Clean(o.resume) + "-weights.safetensors"
			return withExit(2, fmt.Errorf("--resume continues a run with its own run.yaml; run-config flags cannot change it (to train on with other settings, such as more steps: ddpm checkpoint export %s --out %s, then a new ddpm local --init %s --out NEW with the settings you want; its step count and optimizer state start afresh)",
				shellWord(filepath.Join(o.resume, "trainer-0", "checkpoints.db")), shellWord(w), shellWord(w)))
		}
		out = o.resume
		if err := checkResumeFolder(out); err != nil {
			return withExit(2, err)
		}
		if man, err = localrun.ReadManifest(out); err != nil {
			return withExit(2, err)
		}
		if yaml := filepath.Join(out, localrun.ConfigFile); func() bool { _, err := os.Lstat(yaml); return errors.Is(err, os.ErrNotExist) }() {
			if c := runConfigCopy(out, man); c != "" {
				return withExit(2, fmt.Errorf("%s is gone; a trainer keeps the run's config: put it back (cp %s %s) and resume again",
					yaml, shellWord(c), shellWord(yaml)))
			}
		}
		if run, err = config.Load(filepath.Join(out, localrun.ConfigFile)); err != nil {
			return withExit(2, err)
		}
		if run.Hash() != man.ConfigHash {
			return withExit(2, changedRunConfig(out, run, man))
		}
		if cmd.Flags().Changed("data") && !sameRunData(o.data, run) {
			// --data is this command's shorthand for the run config's preset and dataset, which
			// run.yaml fixes; it was ignored here, and the run went on with its own data.
			return withExit(2, fmt.Errorf("--data %s cannot change on --resume: %s trains on %s (its %s); drop --data", o.data, out, run.Dataset, localrun.ConfigFile))
		}
		if o.init != "" && !sameInitFile(o.init, out, man.Init) {
			from := "no --init weights (its seed's initialization)"
			if man.Init != "" {
				from = "--init " + man.Init
			}
			return withExit(2, fmt.Errorf("--init %s cannot change on --resume: the run in %s started from %s; drop --init", o.init, out, from))
		}
		o.init = man.Init
		if o.init != "" {
			// Its trainers need the weights only while the run is at step 0 (a committed
			// checkpoint holds everything they gave it): gone before the first commit, the
			// trainers would fail at their first generation, after the coordinators had started.
			if _, err := os.Stat(o.init); errors.Is(err, os.ErrNotExist) && !runCommitted(out) {
				return withExit(2, fmt.Errorf("%s started from --init %s, which does not exist, and holds no committed checkpoint yet: put the weights back there to resume the run (it starts at step 0 from them)", out, o.init))
			}
		}
		if !cmd.Flags().Changed("samples") && man.Samples != nil {
			o.samples = *man.Samples
		}
		if err := checkSamples(run.Model, o.samples); err != nil {
			return err
		}
		// The processes of a run are part of its identity: raft's peers and the trainers' volumes
		// are recorded in local.json.
		if cmd.Flags().Changed("trainers") && o.trainers != man.Trainers {
			return withExit(2, fmt.Errorf("--trainers cannot change on --resume: %s has %s", out, countNoun(man.Trainers, "trainer", "trainers")))
		}
		if cmd.Flags().Changed("coordinators") && o.coordinators != man.Coordinators {
			return withExit(2, fmt.Errorf("--coordinators cannot change on --resume: %s has %s", out, countNoun(man.Coordinators, "coordinator", "coordinators")))
		}
		if cmd.Flags().Changed("http-tls") && o.httpTLS != man.HTTPTLS {
			return withExit(2, httpTLSChanged(out, man.HTTPTLS))
		}
		o.httpTLS = man.HTTPTLS
		// A run going, or one that is over, starts nothing: the one with its ports and lock held
		// is named; the other is answered from its folder (its dataset and --init weights may
		// be gone by now, and no coordinator or trainer is needed).
		if err := localrun.Running(out); err != nil {
			return withExit(1, err)
		}
		if runFolderFinished(out, run.Steps) {
			return resumeFinished(cmd.Context(), cmd.ErrOrStderr(), out, run, o.samples)
		}
		if err := checkResumeDataset(out, run); err != nil {
			return withExit(2, err)
		}
		if run.MinTrainers > man.Trainers {
			return withExit(2, fmt.Errorf("%s: min_trainers %d is more than its %d trainers", out, run.MinTrainers, man.Trainers))
		}
		if err := checkRunCerts(filepath.Join(out, localrun.CertsDir)); err != nil {
			return withExit(2, err)
		}
		// The ports before the lock: a port held by another program is refused (exit 2) with
		// nothing changed, local.lock's pid included.
		if err := man.ClaimPorts(out, portWait, func(line string) { fmt.Fprintln(cmd.ErrOrStderr(), "ddpm local:", line) }); err != nil {
			if errors.Is(err, localrun.ErrPortHeld) {
				return withExit(2, err)
			}
			return withExit(1, err)
		}
		if lock, err = localrun.Lock(out); err != nil {
			return withExit(1, err)
		}
		defer lock.Release()
	} else {
		if o.out == "" {
			return withExit(2, errors.New("--out RUN_DIR is required (or --resume RUN_DIR)"))
		}
		out = o.out
		// A folder whose run is going: nothing else to say of it (CheckFresh's advice to
		// --resume it would be refused as running).
		if err := localrun.Running(out); err != nil {
			return withExit(1, err)
		}
		if run, err = resolveLocalRun(cmd, rf, o); err != nil {
			return withExit(2, err)
		}
		if err := checkDataset(run, out); err != nil {
			return withExit(2, err)
		}
		if err := checkSamples(run.Model, o.samples); err != nil {
			return err
		}
		if o.trainers > run.MaxTrainers {
			return withExit(2, fmt.Errorf("--trainers %d is more than the run's max_trainers %d", o.trainers, run.MaxTrainers))
		}
		if run.MinTrainers > o.trainers { // the first generation would wait for trainers forever
			return withExit(2, fmt.Errorf("--min-trainers %d is more than --trainers %d", run.MinTrainers, o.trainers))
		}
		if o.init != "" { // checked before a leftover folder is cleared: a refusal changes nothing
			if err := checkInit(o.init, run.Model); err != nil {
				return withExit(2, err)
			}
		}
		if err := clearUnstartedRun(out, rf.Path, cmd.ErrOrStderr()); err != nil {
			return withExit(1, err)
		}
		if err := checkOutFolder(out); err != nil {
			return withExit(2, err)
		}
		if err := localrun.CheckFresh(out, run.Hash()); err != nil {
			if old, merr := localrun.ReadManifest(out); merr == nil && old.ConfigHash == run.Hash() && runFolderFinished(out, run.Steps) {
				// The same command again after its run finished: --resume would only say so.
				return withExit(2, fmt.Errorf("output folder %s already holds this run, which finished at step %d (ddpm local --resume %s says where its samples and loss curve are); choose another --out for a new run",
					out, run.Steps, shellWord(out)))
			}
			return withExit(2, err)
		}
		if man, err = localrun.NewManifest(run.Hash(), o.coordinators, o.trainers); err != nil {
			return err
		}
		man.Samples = &o.samples
		man.HTTPTLS = o.httpTLS
		if o.init != "" {
			if man.Init, err = filepath.Abs(o.init); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			// A read-only mount or another user's folder: the user's to mend, said as the
			// other commands' outputs say it (checkOutPath).
			var pe *os.PathError
			if errors.As(err, &pe) && (errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EROFS)) {
				return withExit(2, fmt.Errorf("--out %s: cannot create the run folder in folder %s (%v); nothing was written", out, filepath.Dir(pe.Path), pe.Err))
			}
			return err
		}
		if lock, err = localrun.Lock(out); err != nil {
			return withExit(1, err)
		}
		defer lock.Release()
		if err := os.WriteFile(filepath.Join(out, localrun.ConfigFile), run.Marshal(), 0o644); err != nil {
			return err
		}
		// Links are mutual TLS even on loopback, as on a real cluster: one CA, node
		// certificate and join secret for this run.
		if _, err := tlsauth.Init(filepath.Join(out, localrun.CertsDir), tlsauth.InitOptions{}); err != nil {
			return err
		}
		if err := localrun.WriteManifest(out, man); err != nil {
			return err
		}
	}

	// Closing the terminal (SIGHUP) stops the run as Ctrl-C does: the children, in process
	// groups of their own, hear of it only from us.
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	// A terminal output that goes away (`ddpm local ... | head`, a closed ssh session) stops
	// the run as SIGHUP does. Without a handler, Go dies of the SIGPIPE of the first write to a
	// broken stdout or stderr, leaving its children to die of their own and their pid files
	// behind. With SIGPIPE notified (for the rest of the process's life: the last error line
	// is written after this returns) every such write fails with EPIPE instead, and
	// brokenOutput cancels the run's context on the first one.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, outGone := context.WithCancel(ctx)
	defer outGone()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	sup, err := localrun.New(exe, filepath.Join(out, localrun.LogsDir))
	if err != nil {
		return err
	}
	// A second Ctrl-C (or SIGTERM) cuts the stop short: every child still running is killed at
	// once, and the run ends with the line saying so (forcedStopLine), status 130.
	killed := forceStopOnSecondSignal(sup)
	defer func() {
		if k := killed(); len(k) > 0 {
			retErr = withExit(exitInterrupted, errors.New(forcedStopLine(k, out)))
		}
	}()
	stderr := io.Writer(&brokenOutput{w: cmd.ErrOrStderr(), gone: outGone})
	mon := newLocalMonitor(run, out, stderr, o.quiet)
	// A resumed run's loss.csv continues the earlier sessions'; one that cannot be read is
	// moved aside, or else left as it is (see loadEarlier).
	if o.resume != "" {
		if err := mon.loadEarlier(); err != nil {
			fmt.Fprintln(stderr, "ddpm local: loss files:", err)
		}
	}
	if !mon.keepCSV {
		if err := mon.openJournal(); err != nil {
			fmt.Fprintln(stderr, "ddpm local: loss files:", err)
		}
	}
	defer mon.closeJournal()
	sup.Line = mon.line
	if o.resume != "" {
		fmt.Fprintln(stderr, resumeLine(out))
	}
	fmt.Fprintf(stderr, "ddpm local: run %s (config %.12s): %s, %s, %d steps of global batch %d, model %s, data %s\n",
		out, run.Hash(), countNoun(man.Coordinators, "coordinator", "coordinators"), countNoun(man.Trainers, "trainer", "trainers"),
		run.Steps, run.GlobalBatch, run.Model, run.Dataset)
	if msg := localEMAWarning(run.EMADecay, run.Steps, o.init); msg != "" && o.samples > 0 {
		fmt.Fprintln(stderr, msg)
	}
	if msg := localSamplesWarning(o.samples, run.T, run.Model); msg != "" {
		fmt.Fprintln(stderr, msg)
	}
	// Not for a resumed run: its run.yaml is fixed (--resume refuses --warmup-steps), and the
	// warning came at its start.
	if msg := localWarmupWarning(run.Steps, run.WarmupSteps, run.LR); msg != "" && o.resume == "" {
		fmt.Fprintln(stderr, msg)
	}
	dropEnv := childFlagEnv()
	if len(dropEnv) > 0 {
		fmt.Fprintln(stderr, droppedEnvLine(dropEnv))
	}
	fmt.Fprintln(stderr, coordinatorsLine(out, man))

	cfgPath := filepath.Join(out, localrun.ConfigFile)
	var coordNames, trainerNames []string
	certs := filepath.Join(out, localrun.CertsDir)
	probe, err := livenessProbes(certs, man.HTTPTLS, o.liveness)
	if err != nil {
		return err
	}
	sup.Unresponsive = func(u localrun.Unresponsive) {
		mon.println(unresponsiveLine(u, o.liveness))
	}
	coordArgs := coordinatorArgs(out, cfgPath, certs, man)
	for i, args := range coordArgs {
		name := "coordinator-" + strconv.Itoa(i)
		coordNames = append(coordNames, name)
		// A coordinator never finishes on its own: any exit the run did not ask for (a crash, a
		// SIGTERM from outside) is restarted.
		sp := localrun.Spec{Name: name, Args: args, DropEnv: dropEnv, Restart: coordinatorRestarts, RestartWindow: restartWindow, Ready: coordinatorStarted, StartAttempts: startAttempts, FatalStatus: 2,
			Finished: func([]byte) bool { return false }, Liveness: probe(man.CoordinatorPorts[i].HTTP)}
		if err := sup.Start(sp); err != nil {
			sup.Close(o.grace)
			return err
		}
	}
	grpcAddrs := man.CoordinatorGRPC()
	for i, p := range man.TrainerPorts {
		name := "trainer-" + strconv.Itoa(i)
		trainerNames = append(trainerNames, name)
		args := []string{"trainer", "--id", name, "--coordinator", strings.Join(grpcAddrs, ","),
			"--listen", localrun.Addr(p.Listen), "--http-addr", localrun.Addr(p.HTTP),
			"--data-dir", localrun.TrainerDir(out, i), "--config", cfgPath, "--certs", certs}
		// Said either way, as the dashboard line says it (DDPM_HTTP_TLS is dropped: childFlagEnv).
		args = append(args, fmt.Sprintf("--http-tls=%t", man.HTTPTLS))
		if o.init != "" {
			args = append(args, "--init", o.init)
		}
		// Restarted after a crash like a StatefulSet pod, once the coordinators have noticed.
		delay := 2*run.HeartbeatTimeout.Std() + time.Second
		// A trainer that exits before its first step report, startAttempts times in a row,
		// cannot start (a corrupted volume): the run stops instead of restarting it forever. So
		// does one that exits with status 2, refused input, whenever it does (a dataset that is
		// not the run's, a prepared shard found corrupted mid-run), and one that fails again
		// with its restarts spent.
		sp := localrun.Spec{Name: name, Args: args, DropEnv: dropEnv, Restart: trainerRestarts, RestartWindow: restartWindow, RestartDelay: delay,
			Ready: trainerStepped, StartAttempts: startAttempts, FatalStatus: 2, FatalAnyTime: true, Finished: trainerFinished, Liveness: probe(p.HTTP)}
		if err := sup.Start(sp); err != nil {
			sup.Close(o.grace)
			return err
		}
	}

	// Say so when a child dies and is restarted (the supervisor restarts it as Kubernetes would);
	// a child that cannot start, or keeps failing, stops the run.
	childFailed := make(chan error, 1+len(trainerNames))
	go func() {
		for e := range sup.Exits() {
			switch {
			case e.Restarting:
				why := fmt.Sprint(e.Err)
				if e.Err == nil {
					why = "status 0 before the run ended: stopped from outside?"
				}
				if e.Crash != "" { // a panic (status 2 or exitBug): its line, not the trace's last one
					why += ", " + e.Crash
				}
				mon.println(fmt.Sprintf("ddpm local: %s exited (%s); restarting it (log: %s)", e.Name, why, filepath.Join(out, localrun.LogsDir, e.Name+".log")))
			case e.GaveUp:
				select {
				case childFailed <- startFailure(out, &localrun.StartError{Name: e.Name, FailedStarts: e.FailedStarts, LastLine: e.LastLine, Err: e.Err}):
				default:
				}
			case e.RestartsSpent:
				select {
				case childFailed <- restartsSpent(out, &localrun.RestartsSpentError{Name: e.Name, Failures: e.Failures, Window: restartWindow, LastLine: e.LastLine, Err: e.Err}):
				default:
				}
			}
		}
	}()

	// The run ends when every trainer has exited with status 0 after the last step's checkpoint
	// committed, or as soon as one of them ends for good with an error (it cannot start, its
	// restarts are spent): the trainers are waited for together, so that one given up on stops
	// the run at once while the others still wait for their next generation.
	done := make(chan error, 1)
	go func() {
		errs := make(chan error, len(trainerNames))
		for _, n := range trainerNames {
			go func() {
				err := sup.Wait(context.Background(), n)
				var se *localrun.StartError
				var re *localrun.RestartsSpentError
				switch {
				case errors.As(err, &se):
					err = startFailure(out, se)
				case errors.As(err, &re):
					err = restartsSpent(out, re)
				case err != nil:
					err = fmt.Errorf("%s: %w (see %s)", n, err, filepath.Join(out, localrun.LogsDir, n+".log"))
				}
				if err != nil {
					select {
					case childFailed <- err:
					default:
					}
				}
				errs <- err
			}()
		}
		var all []error
		for range trainerNames {
			all = append(all, <-errs)
		}
		done <- errors.Join(all...)
	}()
	var runErr error
	interrupted := false
	select {
	case runErr = <-done:
	case runErr = <-childFailed:
	case <-ctx.Done():
		interrupted = true
		mon.println("ddpm local: stopping (trainers finish their step, then coordinators)")
	}
	// Trainers first (a no-op for those that ended), then the coordinators they report to. After
	// a successful run the coordinators stay up through the final sampling, and at least
	// followLinger, so that `ddpm status` and `ddpm loss --follow` see the run succeed rather
	// than the cluster vanish.
	stopTogether(sup, o.grace, trainerNames)
	trainersDone := time.Now()
	var stopOnce sync.Once
	stopCoordinators := func() {
		stopOnce.Do(func() {
			mon.stopping.Store(true)
			sup.StopAll(o.grace, coordNames...)
			sup.Close(o.grace)
		})
	}
	defer stopCoordinators()
	if interrupted || runErr != nil {
		stopCoordinators()
	} else {
		defer func() {
			if ctx.Err() == nil {
				time.Sleep(time.Until(trainersDone.Add(followLinger)))
			}
			stopCoordinators()
		}()
	}
	mon.finish()
	if err := mon.writeLoss(); err != nil {
		fmt.Fprintln(stderr, "ddpm local: loss files:", err)
	}
	if interrupted {
		return withExit(exitInterrupted, fmt.Errorf("interrupted; continue with: ddpm local --resume %s", shellWord(out)))
	}
	if se := (*startFailed)(nil); errors.As(runErr, &se) {
		return withExit(1, runErr)
	}
	if runErr != nil {
		return fmt.Errorf("run failed: %w", runErr)
	}
	if o.samples > 0 {
		// The trainer that holds the final checkpoint: trainer-0 unless it missed the end.
		ckpt, err := trainer.CheckpointFileIn(out)
		if err != nil {
			return fmt.Errorf("samples: %w", err)
		}
		samplesPath := filepath.Join(out, localrun.SamplesPNG)
		t0 := time.Now()
		// Sampling runs T network evaluations; Ctrl-C must not wait for it. The run is complete
		// and committed by now, and the grid is written through a temporary file, so leaving
		// mid-way loses nothing.
		sampled := make(chan error, 1)
		go func() { sampled <- sampleGrid(ckpt, -1, o.samples, run.Seed, samplesPath, "", stderr) }()
		select {
		case err := <-sampled:
			if err != nil {
				return fmt.Errorf("samples: %w", err)
			}
		case <-ctx.Done():
			return withExit(exitInterrupted, errors.New(interruptedSamplingLine(out, samplesPath, o.samples, run.Seed)))
		}
		fmt.Fprintf(stderr, "ddpm local: wrote %s (%s of the EMA weights in %.0fs)\n", samplesPath, countNoun(o.samples, "sample", "samples"), time.Since(t0).Seconds())
	}
	fmt.Fprintf(stderr, "ddpm local: done: %s; final loss %s\n", out, mon.finalLoss())
	return nil
}

// sameStopWindow is how soon after the first SIGINT or SIGTERM another one is taken as the same
// stop request rather than a second Ctrl-C: GNU timeout, a service manager or a shell may signal
// both ddpm local and its process group, so that one stop arrives twice within microseconds,
// while a person's second Ctrl-C comes a good part of a second after the first at the soonest.
const sameStopWindow = time.Second

// forceStopOnSecondSignal watches for SIGINT and SIGTERM from now until the returned function is
// called: the first one is the stop that signal.NotifyContext in runLocal already asks for
// (trainers finish their step, then the coordinators stop, each within --grace); at the second
// one, sameStopWindow or more after the first, sup.KillAll kills every child still running at
// once (one sooner is the same stop, delivered twice). The returned function stops the watch and
// returns the names of the children killed so (nil when no second signal came).
func forceStopOnSecondSignal(sup *localrun.Supervisor) func() []string {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit, result := make(chan struct{}), make(chan []string, 1)
	go func() {
		defer signal.Stop(sigs)
		var killed []string
		defer func() { result <- killed }()
		var first time.Time
		for {
			select {
			case <-sigs:
			case <-quit:
				return
			}
			if first.IsZero() {
				first = time.Now()
				continue
			}
			if time.Since(first) >= sameStopWindow {
				break
			}
		}
		killed = sup.KillAll()
		<-quit
	}()
	return func() []string {
		close(quit)
		return <-result
	}
}

// forcedStopLine is the line of a ddpm local run in out whose stop a second Ctrl-C cut short,
// killing the children killed (names) at once. What they had committed stays: a checkpoint is
// one bbolt transaction, fsynced at its commit, in a trainer's checkpoints.db, and so are the
// coordinators' raft log entries in raft.db; a step or checkpoint write under way is lost and
// done again by --resume.
//
//	interrupted again: killed coordinator-0, trainer-0, trainer-1 at once, without their clean stop; the checkpoints committed so far are kept; continue with: ddpm local --resume runs/a
func forcedStopLine(killed []string, out string) string {
	return fmt.Sprintf("interrupted again: killed %s at once, without their clean stop; the checkpoints committed so far are kept; continue with: ddpm local --resume %s",
		strings.Join(killed, ", "), shellWord(out))
}

// interruptedSamplingLine is the line of a ddpm local run stopped while it drew its n final
// samples (seed: the run's): the run is complete, and the ddpm sample command given draws the
// grid it would have written, the same n images of the same seed (sample's defaults, 64 and 0,
// left out):
//
//	interrupted while sampling; the run is complete: draw samples with ddpm sample --checkpoint runs/a --n 16 --out runs/a/samples.png
func interruptedSamplingLine(out, samplesPath string, n int, seed uint64) string {
	args := ""
	if n != 64 {
		args += fmt.Sprintf(" --n %d", n)
	}
	if seed != 0 {
		args += fmt.Sprintf(" --seed %d", seed)
	}
	return fmt.Sprintf("interrupted while sampling; the run is complete: draw samples with ddpm sample --checkpoint %s%s --out %s", shellWord(out), args, shellWord(samplesPath))
}

// stopTogether stops the named processes (Supervisor.Stop: SIGTERM, SIGKILL after grace) all at
// once and waits for them. Trainers stop together: stopped one after the other, the next one ran
// into a step whose peer had gone and logged a warning ("generation ended ... peer lost") for an
// expected stop, or trained on alone until its own SIGTERM came.
func stopTogether(sup *localrun.Supervisor, grace time.Duration, names []string) {
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { _ = sup.Stop(n, grace) }) // a name never started: ErrUnknownProcess
	}
	wg.Wait()
}

// startAttempts is how many start-up failures in a row of one child stop the run.
const startAttempts = 3

// trainerRestarts and coordinatorRestarts are how often a crashed trainer or coordinator is
// restarted within restartWindow; its next failure stops the run (restartsSpent).
const (
	trainerRestarts     = 5
	coordinatorRestarts = 3
)

// restartWindow is the period over which a child's crash restarts count (5 for a trainer, 3
// for a coordinator): a long run survives a crash now and then, a child that keeps crashing
// still stops being restarted.
const restartWindow = 10 * time.Minute

// portWait is how long a resumed run waits for a recorded port held by what lets go by itself
// (localrun.Manifest.ClaimPorts): a closed connection that was given the port as its ephemeral
// one keeps it for TIME_WAIT's 60 s; a process of the run left from a killed supervisor stops
// within its grace. Another program listening on the port is refused at once.
const portWait = 65 * time.Second

// followLinger is how long the coordinators outlive a successful run's trainers at least: a
// little more than one poll of `ddpm loss --follow` (--every, default 2 s).
const followLinger = 2500 * time.Millisecond

// trainerStepped and coordinatorStarted tell from a child's line that it started up properly: a
// trainer's first step report, a coordinator's "started" line after raft and gRPC are up.
func trainerStepped(line []byte) bool { _, ok := trainer.ParseProgress(line); return ok }

// trainerFinished tells from a trainer's line that the run is complete (its status 0 is final).
func trainerFinished(line []byte) bool {
	return logMsgIs(line, trainer.MsgRunComplete)
}

func coordinatorStarted(line []byte) bool {
	return logMsgIs(line, coordinatorStartedMsg)
}

// logMsgIs reports whether a child's log line (slog JSON or text) has the message msg.
func logMsgIs(line []byte, msg string) bool {
	return bytes.Contains(line, []byte(`"msg":"`+msg+`"`)) || bytes.Contains(line, []byte(`msg="`+msg+`"`))
}

// startFailed is the error of a run stopped because one child could not start.
type startFailed struct{ msg string }

func (e *startFailed) Error() string { return e.msg }

// startFailure words se as one line: the child, how often it failed and the reason it gave (its
// last line), and where its log is. Nothing of the run is removed, so --resume continues it once
// the cause is fixed.
func startFailure(out string, se *localrun.StartError) error {
	reason := strings.TrimPrefix(humanLine([]byte(se.LastLine)), "ddpm: ")
	if reason == "" {
		reason = fmt.Sprint(se.Err)
	}
	how := fmt.Sprintf("%d times at start-up", se.FailedStarts)
	switch se.FailedStarts {
	case 0: // after a good start, with a status no restart fixes (refused input)
		how = fmt.Sprintf("(%v)", se.Err)
	case 1:
		how = fmt.Sprintf("at start-up (%v)", se.Err)
	}
	return &startFailed{fmt.Sprintf("%s failed %s: %s (see %s)", se.Name, how, reason, filepath.Join(out, localrun.LogsDir, se.Name+".log"))}
}

// restartsSpent words re, a child that failed again with its restarts spent, as one line: the
// child, how often it failed within the window, its last exit, the reason it gave when its last
// line is its command's error line ("ddpm: ..."), and where its log is, e.g. "trainer-1 failed
// 6 times in 10m0s; giving up: signal: killed (see RUN/logs/trainer-1.log)" or "trainer-1
// failed 6 times in 10m0s; giving up: exit status 1: trainer: ...: no space left on device
// (see ...)". A child killed mid-run has no such line: its last is a log record, no reason.
func restartsSpent(out string, re *localrun.RestartsSpentError) error {
	why := "status 0 before the run ended"
	if re.Err != nil {
		why = re.Err.Error()
	}
	if reason, ok := strings.CutPrefix(strings.TrimRight(re.LastLine, "\n"), "ddpm: "); ok && reason != "" {
		why += ": " + reason
	}
	return &startFailed{fmt.Sprintf("%s failed %d times in %v; giving up: %s (see %s)", re.Name, re.Failures, re.Window, why, filepath.Join(out, localrun.LogsDir, re.Name+".log"))}
}

// checkRunCerts refuses a run folder whose certificates are gone, unusable, or of one role (ddpm
// certs issue; every process of the run uses this one directory) before any process is started
// (each would fail at start-up, or the coordinators would refuse each other, and that refusal
// in their logs would be all there is to see).
func checkRunCerts(dir string) error {
	for _, f := range []string{tlsauth.CAFile, tlsauth.CertFile, tlsauth.KeyFile, tlsauth.SecretFile} {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s is missing: the run's processes authenticate each other with %s; restore it, or remove %s and make new ones with: ddpm certs init %s", p, dir, dir, shellWord(dir))
		}
	}
	b, err := tlsauth.Load(tlsauth.Config{Dir: dir, ServerName: tlsauth.NodeName})
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if r := b.Role(); r != tlsauth.RoleNone {
		// Every process of the run, coordinators and trainers, presents this one certificate:
		// one of a role (ddpm certs issue) lets only that role's processes work (the others'
		// raft links or calls are refused, and the run waits with nothing on the terminal).
		return fmt.Errorf("%s holds a certificate of role %s (made by ddpm certs issue): ddpm local runs every process on this one directory and needs the role-less one ddpm certs init makes; restore it, or remove %s and make new ones with: ddpm certs init %s",
			dir, r, dir, shellWord(dir))
	}
	return nil
}

// checkInit reads --init as the trainers will, so that a file that is not weights of the run's
// model is refused before the run folder is created and the processes are started. Weights of
// another preset (unet.PresetsOfWeights) are named as such, with both ways out; other weights
// that do not fit say which tensor does not.
func checkInit(path, model string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--init %s does not exist", path)
	} else if err != nil {
		return fmt.Errorf("--init: %w", err)
	}
	if err := checkWeightsKind("--init", path); err != nil {
		return err
	}
	ucfg, err := unet.Preset(model)
	if err != nil {
		return err
	}
	m, err := unet.New(ucfg)
	if err != nil {
		return err
	}
	if _, err := unet.ReadSafetensors(path, m.Tensors(), make([]float32, len(m.Params()))); err != nil {
		if names, _ := unet.PresetsOfWeights(path); len(names) > 0 && !slices.Contains(names, model) {
			quoted := make([]string, len(names))
			for i, n := range names {
				quoted[i] = strconv.Quote(n)
			}
			return fmt.Errorf("--init %s holds weights of U-Net %s, this run's model is %q: give weights of %q (ddpm checkpoint export of a %s run) or --model %s",
				path, strings.Join(quoted, " or "), model, model, model, names[0])
		}
		return fmt.Errorf("--init %s is not weights of model %q: %w", path, model, err)
	}
	return nil
}

// changedRunConfig is the --resume refusal of a run folder whose run.yaml (run) no longer
// hashes to the config its local.json (man) recorded at the start, as when it was edited to
// train on with more steps: a run's config is its identity (the coordinators and every
// checkpoint hold its hash). The line names the way back, a trainer's copy of the original
// (RUN/trainer-I/run.yaml) when one hashes right, and the way on:
//
//	runs/a/run.yaml was changed since the run started (config 1f4f6e1055cc, the run's 9d60c1b7189b), and a run's config cannot change: put it back (cp runs/a/trainer-0/run.yaml runs/a/run.yaml); to train on with other settings, such as more steps: ddpm checkpoint export runs/a --out runs/a-weights.safetensors, then a new ddpm local --init runs/a-weights.safetensors --out NEW
func changedRunConfig(out string, run config.Run, man localrun.Manifest) error {
	yaml := filepath.Join(out, localrun.ConfigFile)
	back := "put it back as it was"
	if c := runConfigCopy(out, man); c != "" {
		back = fmt.Sprintf("put it back (cp %s %s)", shellWord(c), shellWord(yaml))
	}
	w := filepath.Clean(out) + "-weights.safetensors"
	return fmt.Errorf("%s was changed since the run started (config %.12s, the run's %.12s), and a run's config cannot change: %s; to train on with other settings, such as more steps: ddpm checkpoint export %s --out %s, then a new ddpm local --init %s --out NEW",
		yaml, run.Hash(), man.ConfigHash, back, shellWord(out), shellWord(w), shellWord(w))
}

// sameInitFile reports whether --init given names the weights a run in out recorded as its
// --init (recorded: absolute, or relative to out in older manifests; "" for none): the same
// path once made absolute, or the same file.
func sameInitFile(given, out, recorded string) bool {
	if recorded == "" {
		return false
	}
	if !filepath.IsAbs(recorded) {
		recorded = filepath.Join(out, recorded)
	}
	if abs, err := filepath.Abs(given); err == nil && abs == filepath.Clean(recorded) {
		return true
	}
	gst, gerr := os.Stat(given)
	rst, rerr := os.Stat(recorded)
	return gerr == nil && rerr == nil && os.SameFile(gst, rst)
}

// runConfigCopy is the first trainer's copy of the run config (RUN/trainer-I/run.yaml) of the
// ddpm local run in out that hashes to the config its local.json (man) recorded, or "" when none
// does.
func runConfigCopy(out string, man localrun.Manifest) string {
	for i := range man.Trainers {
		c := filepath.Join(localrun.TrainerDir(out, i), trainer.ConfigFile)
		if r, err := config.Load(c); err == nil && r.Hash() == man.ConfigHash {
			return c
		}
	}
	return ""
}

// runFolderAbove is the ddpm local run folder (localrun.IsRunFolder) that holds path within two
// levels (RUN/trainer-0, RUN/trainer-0/checkpoints.db, RUN/run.yaml), or "" when none does.
func runFolderAbove(path string) string {
	dir := filepath.Clean(path)
	for range 2 {
		if dir = filepath.Dir(dir); localrun.IsRunFolder(dir) {
			return dir
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	return ""
}

// checkResumeFolder refuses a --resume path that is not a run folder in one line saying what it
// is: missing, a part of a run (its trainer folder, its checkpoint file: give the run folder
// above), or a file. A folder that may be a run passes, for localrun.ReadManifest to judge:
//
//	--resume runs/a/trainer-0/checkpoints.db is a file of the ddpm local run runs/a; give --resume runs/a
func checkResumeFolder(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("--resume %s does not exist (it takes the folder of a ddpm local run, its --out)", path)
	case err != nil:
		return fmt.Errorf("--resume %s: %w", path, err)
	case localrun.IsRunFolder(path):
		if _, err := os.Stat(filepath.Join(path, localrun.ManifestFile)); errors.Is(err, os.ErrNotExist) {
			// trainer-0/checkpoints.db without local.json: the record of its processes and
			// ports is gone, the checkpoints are not (or there are none yet: then there is
			// nothing to export, and a new run of the same run.yaml loses nothing).
			if step, _, err := newestCommittedIn(path); err == nil && step < 0 {
				return fmt.Errorf("--resume %s: its %s is gone (the run's processes and ports), so the run cannot be resumed; it holds no committed checkpoint yet, so nothing is lost by starting it again: ddpm local --config %s --out NEW (with the --init it began from, if any)",
					path, localrun.ManifestFile, shellWord(filepath.Join(path, localrun.ConfigFile)))
			}
			w := filepath.Clean(path) + "-weights.safetensors"
			return fmt.Errorf("--resume %s: its %s is gone (the run's processes and ports), so the run cannot be resumed; its checkpoints are there: ddpm checkpoint export %s --out %s, then a new ddpm local --init %s --out NEW",
				path, localrun.ManifestFile, shellWord(path), shellWord(w), shellWord(w))
		}
		return nil
	}
	if run := runFolderAbove(path); run != "" {
		what := "a folder"
		if !st.IsDir() {
			what = "a file"
		}
		return fmt.Errorf("--resume %s is %s of the ddpm local run %s; give --resume %s", path, what, run, shellWord(run))
	}
	if !st.IsDir() {
		if kind := sniffFile(path); kind != "" {
			return fmt.Errorf("--resume %s is %s, not a ddpm local run folder (the --out of a ddpm local run)", path, kind)
		}
		return fmt.Errorf("--resume %s is a file, not a ddpm local run folder (the --out of a ddpm local run)", path)
	}
	return nil
}

// clearUnstartedRun empties the --out folder out of what a ddpm local stopped in its first
// moments left there: the start writes local.lock, run.yaml and certs/ before local.json and
// starts no process before local.json, so a folder holding local.lock and nothing but those
// (no local.json, nothing else) was never a run, and held its own files only. They are removed,
// with one line on w, and the new run starts there. Anything else in the folder, a folder
// without local.lock (only ddpm local writes one), or --config naming out's run.yaml (an
// input) leaves it to checkOutFolder's refusal. An error: a leftover that could not be removed.
//
//	ddpm local: runs/a holds what a ddpm local stopped before its run began left (local.lock, run.yaml, certs, no local.json); starting the run there afresh
func clearUnstartedRun(out, config string, w io.Writer) error {
	ents, err := os.ReadDir(out)
	if err != nil || len(ents) == 0 {
		return nil
	}
	own := map[string]bool{localrun.LockFile: true, localrun.ConfigFile: true, localrun.CertsDir: true}
	var names []string // local.lock last: the lock is held on it while the others go
	lock := false
	for _, e := range ents {
		switch {
		case !own[e.Name()]:
			return nil
		case e.Name() == localrun.LockFile:
			lock = true
		default:
			names = append(names, e.Name())
		}
	}
	names = append(names, localrun.LockFile)
	if !lock {
		return nil
	}
	if config != "" {
		if cst, err := os.Stat(config); err == nil {
			if yst, err := os.Stat(filepath.Join(out, localrun.ConfigFile)); err == nil && os.SameFile(cst, yst) {
				return nil
			}
		}
	}
	// Under the run folder's lock (its file removed last), so that a ddpm local that took the
	// folder since keeps its files.
	l, err := localrun.Lock(out)
	if err != nil {
		return nil
	}
	defer l.Release()
	for _, n := range names {
		if err := os.RemoveAll(filepath.Join(out, n)); err != nil {
			return fmt.Errorf("--out %s holds what a ddpm local stopped before its run began left, which could not be removed: %w", out, err)
		}
	}
	fmt.Fprintf(w, "ddpm local: %s holds what a ddpm local stopped before its run began left (%s, no %s); starting the run there afresh\n",
		out, strings.Join(names, ", "), localrun.ManifestFile)
	return nil
}

// checkOutFolder refuses, in one line before anything is written, a new run's --out that is a
// file, a folder in a ddpm local run (its trainer or coordinator folder, or a new one there), or
// a folder of other files (what they are is not ours to judge, and nothing of them is
// overwritten):
//
//	--out imgs holds 40 files or folders and no ddpm local run; give a new or empty folder for the run
//
// A folder that holds a run is localrun.CheckFresh's to judge (the same run, or another).
func checkOutFolder(out string) error {
	if localrun.IsRunFolder(out) {
		return nil
	}
	if run := runFolderAbove(out); run != "" {
		return fmt.Errorf("--out %s is in the folder of the ddpm local run %s; give a new folder outside it (or --resume %s)", out, run, shellWord(run))
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil // missing: created; unreadable: CheckFresh names it
	}
	if !st.IsDir() {
		return fmt.Errorf("--out %s is a file, not a folder: give a new folder for the run", out)
	}
	if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
		return fmt.Errorf("--out %s holds %s and no ddpm local run; give a new or empty folder for the run", out, countNoun(len(ents), "file or folder", "files or folders"))
	}
	return nil
}

// sameRunData reports whether --data data names the data of run (its run.yaml): the same spec,
// the same path, or the preset whose built-in data the run trains on.
func sameRunData(data string, run config.Run) bool {
	if data == run.Dataset {
		return true
	}
	if p, err := config.Preset(data); err == nil {
		return data == run.Preset && p.Dataset == run.Dataset
	}
	a, errA := filepath.Abs(data)
	b, errB := filepath.Abs(run.Dataset)
	return errA == nil && errB == nil && a == b
}

// samplesWarnAbove: a --samples count above this many images gets localSamplesWarning at the
// start (the default is 64; sampling takes T forward passes per image, after training).
const samplesWarnAbove = 1024

// sampleImageStep measures the seconds one eps_theta forward pass of model takes per image on
// this machine now, as sampling runs it (inference mode, no dropout): the second of two passes of
// a batch of 2, so that buffer allocation is not counted. A variable so that tests can fix it.
var sampleImageStep = func(model string) (float64, error) {
	ucfg, err := unet.Preset(model)
	if err != nil {
		return 0, err
	}
	ucfg.Dropout = 0
	m, err := unet.New(ucfg)
	if err != nil {
		return 0, err
	}
	m.Init(1)
	m.SetInference(true)
	const b = 2
	x := make([]float32, b*ucfg.InCh*ucfg.Resolution*ucfg.Resolution)
	t := []int32{0, 0}
	m.Forward(x, t, b, nil)
	t0 := time.Now()
	m.Forward(x, t, b, nil)
	return time.Since(t0).Seconds() / b, nil
}

// localSamplesWarning is the start-up warning of a --samples count n above samplesWarnAbove:
// drawing n images takes n*T forward passes of model after training, and one line says roughly
// how long on this machine (sampleImageStep), e.g. "ddpm local: warning: --samples 100000 will
// take about 1.2 days of sampling after training (1000 reverse steps per image on this machine);
// samples.png needs far fewer: the default is 64". "" for n up to samplesWarnAbove, or when the
// time cannot be measured (an unknown model, refused elsewhere).
func localSamplesWarning(n, T int, model string) string {
	if n <= samplesWarnAbove {
		return ""
	}
	per, err := sampleImageStep(model)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("ddpm local: warning: --samples %d will take about %s of sampling after training (%d reverse steps per image on this machine); samples.png needs far fewer: the default is 64",
		n, roughDuration(per*float64(n)*float64(T)), T)
}

// roughDuration words sec seconds to two figures at most, in the unit that suits it: "40 s",
// "12 min", "3.5 h", "1 day", "1.2 days", "365 days".
func roughDuration(sec float64) string {
	switch {
	case sec < 60:
		return fmt.Sprintf("%.0f s", sec)
	case sec < 3600:
		return fmt.Sprintf("%.0f min", sec/60)
	case sec < 24*3600:
		return fmt.Sprintf("%.2g h", sec/3600)
	case sec < 10*24*3600:
		if d := fmt.Sprintf("%.2g", sec/(24*3600)); d != "1" {
			return d + " days"
		}
		return "1 day"
	default:
		return fmt.Sprintf("%.0f days", sec/(24*3600))
	}
}

// checkSamples refuses a --samples count that one samples.png cannot hold (checkGridCount), before
// the run starts rather than after it has trained.
func checkSamples(model string, n int) error {
	ucfg, err := unet.Preset(model)
	if err != nil || n == 0 {
		return nil // an unknown model is refused by the run config's validation
	}
	return checkGridCount("--samples", n, ucfg.Resolution, ucfg.Resolution)
}

// checkTrainSplit refuses a run dataset naming the test split (mnist:test, DIR:test) in one line
// with the spec to give instead: a run trains on the train split, and the test split is what
// ddpm eval measures it on. ddpm local, a standalone or cluster trainer and a coordinator given
// the run config all refuse it so.
func checkTrainSplit(spec string) error {
	if specSplit(spec) == "test" {
		return fmt.Errorf("dataset %s names the test split; a run trains on the train split: give %s", spec, specPath(spec))
	}
	return nil
}

// checkDataset opens the run's dataset as the trainers will (a greyscale image folder with the
// model's channels, dataset.Options.Channels) and refuses, each in one line: images the model
// cannot take (the trainers would only fail and be restarted until their restarts ran out),
// naming both shapes and the way out (shapeMismatch); a test split; an undecodable image, with
// the way to train on the others (ddpm dataset prepare --skip-bad); and a run folder out inside
// an image folder (its loss.png and samples.png would become images of the dataset).
func checkDataset(run config.Run, out string) error {
	if err := checkTrainSplit(run.Dataset); err != nil {
		// Opened with Split "train", it would read as a conflict the user never asked for.
		return err
	}
	ucfg, err := unet.Preset(run.Model)
	if err != nil {
		return err
	}
	// A folder of greyscale images is read with the model's channels, as the trainers read it:
	// 1, or the grey level in three planes for a 3-channel model.
	ds, err := dataset.Open(run.Dataset, dataset.Options{Split: "train", Channels: ucfg.InCh})
	if err != nil && cannotRead(run.Dataset) {
		return unreadableData("dataset", run.Dataset)
	}
	if err != nil {
		// A prepared copy of a test split (ddpm dataset prepare fashion-mnist:test): the
		// package's "unsupported option: D: holds the test split, train asked" said it obliquely.
		if whole, werr := dataset.Open(run.Dataset, dataset.Options{Channels: ucfg.InCh}); werr == nil {
			if info := dataset.Describe(whole); info.Split == "test" {
				way := "give the data of the train split (for a prepared folder, one prepared without :test)"
				if base := strings.TrimSuffix(info.Name, "/test"); base == "mnist" || base == "fashion-mnist" {
					way = fmt.Sprintf("give --data %s (or a folder ddpm dataset prepare %s made)", base, base)
				}
				return fmt.Errorf("dataset %s holds the test split (%s); a run trains on the train split: %s", run.Dataset, info.Name, way)
			}
		}
	}
	if err != nil {
		err = fmt.Errorf("dataset %q: %w", run.Dataset, err)
	}
	if errors.Is(err, dataset.ErrDecode) {
		// ddpm local has no --skip-bad: say where it is.
		return fmt.Errorf("%w; to train on the others: ddpm dataset prepare %s --skip-bad%s --out DIR, and train on DIR", err, shellWord(specPath(run.Dataset)), prepareChannels(ucfg.InCh))
	}
	if err != nil {
		return err
	}
	if dataset.Describe(ds).Format == "image-folder" {
		if err := checkOutsideImageFolder("--out", out, specPath(run.Dataset), "the run's loss.png and samples.png"); err != nil {
			return err
		}
	}
	if c, h, w := ds.Shape(); c != ucfg.InCh || h != ucfg.Resolution || w != ucfg.Resolution {
		info := dataset.Describe(ds)
		// A prepared copy of 1-channel images from an image folder: a greyscale folder's.
		grey := info.Grey || (info.Format == "prepared" && c == 1 && strings.HasPrefix(info.Name, "folder/"))
		return shapeMismatch(run.Dataset, info.Format, grey, c, h, w, run.Model, ucfg)
	}
	return nil
}

// prepareChannels is the --channels flag a ddpm dataset prepare hint gives for a model of inCh
// channels: a prepared copy of a greyscale folder keeps the channels it was prepared with, 1
// unless --channels 3 asks for the grey level in three planes, as a 3-channel model reads it.
func prepareChannels(inCh int) string {
	if inCh == 3 {
		return " --channels 3"
	}
	return ""
}

// shapeMismatch words a dataset of c x h x w images (spec, of format; grey: of a greyscale image
// folder, or a prepared copy of one) that model's U-Net ucfg
// cannot take, e.g. `dataset imgs has 3x32x32 images (RGB), model "tiny" wants 1x32x32
// (greyscale); the models for 3x32x32 images: cifar10, small (--model)`. When the channels agree
// and only the size differs, a source that takes a resolution (an image folder, an LSUN LMDB) is
// told how to make a copy at the model's size instead.
func shapeMismatch(spec, format string, grey bool, c, h, w int, model string, ucfg unet.Config) error {
	kind := func(c int) string {
		switch c {
		case 1:
			return " (greyscale)"
		case 3:
			return " (RGB)"
		}
		return ""
	}
	have := kind(c)
	if grey && c == 3 {
		have = " (greyscale, the grey level in three channels)"
	}
	line := fmt.Sprintf("dataset %s has %dx%dx%d images%s, model %q wants %dx%dx%d%s",
		spec, c, h, w, have, model, ucfg.InCh, ucfg.Resolution, ucfg.Resolution, kind(ucfg.InCh))
	if c == ucfg.InCh && (format == "image-folder" || format == "lsun-lmdb") {
		ch := ""
		if grey {
			ch = prepareChannels(ucfg.InCh)
		}
		return fmt.Errorf("%s; make a copy at %dx%d with: ddpm dataset prepare %s --resolution %d%s --out DIR, and train on DIR",
			line, ucfg.Resolution, ucfg.Resolution, shellWord(spec), ucfg.Resolution, ch)
	}
	var fit []string
	for _, name := range unet.PresetNames() {
		if p, _ := unet.Preset(name); p.InCh == c && p.Resolution == h && h == w {
			fit = append(fit, name)
		}
	}
	again := ""
	if format == "prepared" && grey && c == 1 && ucfg.InCh == 3 && h == ucfg.Resolution && w == ucfg.Resolution {
		// A greyscale folder prepares as 1 channel unless --channels 3 asks for three.
		again = "; a copy prepared from a folder of greyscale images: prepare it again with --channels 3"
	}
	if len(fit) == 0 {
		return fmt.Errorf("%s; no model preset takes %dx%dx%d images%s", line, c, h, w, again)
	}
	return fmt.Errorf("%s; the models for %dx%dx%d images: %s (--model)%s", line, c, h, w, strings.Join(fit, ", "), again)
}

// coordinatorsLine says where the run's coordinators answer, as `ddpm status` and `ddpm loss`
// take it, and the dashboard's URL (the first coordinator's; every replica serves it), e.g.
// "ddpm local: coordinators 127.0.0.1:A,127.0.0.1:B (ddpm status RUN, ddpm loss RUN; from
// elsewhere --coordinator 127.0.0.1:A,127.0.0.1:B --certs RUN/certs); dashboard http://127.0.0.1:H/".
// (It gave the --coordinator form only, from before status and loss took the run folder.)
// With --http-tls (man.HTTPTLS) the URL is https and the line ends with how to reach it, a
// client certificate of the run's CA being needed: "; dashboard https://127.0.0.1:H/ (HTTPS
// with a certificate of the run: curl --cert RUN/certs/node.crt --key RUN/certs/node.key
// --cacert RUN/certs/ca.crt https://127.0.0.1:H/api/status)".
func coordinatorsLine(out string, man localrun.Manifest) string {
	addrs := strings.Join(man.CoordinatorGRPC(), ",")
	certs := filepath.Join(out, localrun.CertsDir)
	line := fmt.Sprintf("ddpm local: coordinators %s (ddpm status %s, ddpm loss %s; from elsewhere --coordinator %s --certs %s); dashboard ",
		addrs, shellWord(out), shellWord(out), addrs, certs)
	dash := localrun.Addr(man.CoordinatorPorts[0].HTTP)
	if !man.HTTPTLS {
		return line + "http://" + dash + "/"
	}
	return fmt.Sprintf("%shttps://%s/ (HTTPS with a certificate of the run: curl --cert %s --key %s --cacert %s https://%s/api/status)", line, dash,
		shellWord(filepath.Join(certs, tlsauth.CertFile)), shellWord(filepath.Join(certs, tlsauth.KeyFile)), shellWord(filepath.Join(certs, tlsauth.CAFile)), dash)
}

// httpTLSChanged is the refusal, exit status 2, of a --http-tls on --resume that differs from
// the run's first start (tls: the run serves HTTPS), recorded in its local.json.
func httpTLSChanged(out string, tls bool) error {
	if tls {
		return fmt.Errorf("--http-tls cannot change on --resume: %s serves its HTTP over HTTPS (it started with --http-tls, recorded in %s); drop --http-tls=false",
			out, filepath.Join(out, localrun.ManifestFile))
	}
	return fmt.Errorf("--http-tls cannot change on --resume: %s serves its HTTP in plain text (it started without --http-tls, recorded in %s); drop --http-tls, or start a new run with it",
		out, filepath.Join(out, localrun.ManifestFile))
}

// childFlagEnv names, sorted, the variables of this environment that ddpm coordinator or ddpm
// trainer would read as one of their flags (DDPM_<FLAG>: DDPM_LR, DDPM_HTTP_TLS, DDPM_INSECURE,
// ...). The run's processes do not get them (localrun.Spec.DropEnv): their settings are the
// run's, run.yaml and local.json, and a DDPM_LR exported in the shell made the coordinators
// run another config than the trainers' run.yaml, which failed their join.
func childFlagEnv() []string {
	var cmds []*cobra.Command
	for _, name := range []string{"coordinator", "trainer"} {
		if c, _, err := rootCmd.Find([]string{name}); err == nil && c != rootCmd {
			cmds = append(cmds, c)
		}
	}
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		flag, ok := strings.CutPrefix(name, "DDPM_")
		if !ok {
			continue
		}
		flag = strings.ToLower(strings.ReplaceAll(flag, "_", "-"))
		if slices.ContainsFunc(cmds, func(c *cobra.Command) bool { return c.Flags().Lookup(flag) != nil }) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// droppedEnvLine says which variables (childFlagEnv) the run's processes do not get:
//
//	ddpm local: DDPM_LR is set here but not passed to the run's coordinators and trainers (their settings are the run's: run.yaml and local.json)
func droppedEnvLine(names []string) string {
	is := " is set"
	if len(names) > 1 {
		is = " are set"
	}
	return "ddpm local: " + strings.Join(names, ", ") + is + " here but not passed to the run's coordinators and trainers (their settings are the run's: run.yaml and local.json)"
}

// coordinatorArgs builds each replica's command line; the first replica bootstraps a new cluster.
func coordinatorArgs(out, cfgPath, certs string, m localrun.Manifest) [][]string {
	peers := make([]string, m.Coordinators)
	for i, p := range m.CoordinatorPorts {
		peers[i] = fmt.Sprintf("c%d=%s=%s", i, localrun.Addr(p.Raft), localrun.Addr(p.GRPC))
	}
	var all [][]string
	for i, p := range m.CoordinatorPorts {
		args := []string{"coordinator", "--id", "c" + strconv.Itoa(i),
			"--raft-addr", localrun.Addr(p.Raft), "--grpc-addr", localrun.Addr(p.GRPC), "--http-addr", localrun.Addr(p.HTTP),
			"--peers", strings.Join(peers, ","), "--data-dir", localrun.CoordinatorDir(out, i), "--certs", certs}
		// Every replica bootstraps with the same configuration (a no-op on a data dir that
		// already holds raft state, as on --resume) and submits the same run config.
		args = append(args, "--bootstrap", "--config", cfgPath)
		args = append(args, fmt.Sprintf("--http-tls=%t", m.HTTPTLS)) // said either way, as the dashboard line
		all = append(all, args)
	}
	return all
}

// brokenOutput passes writes to w and calls gone once when one fails with EPIPE: the reader of
// the pipe w is (a terminal's, `| head`'s) has gone away.
type brokenOutput struct {
	w    io.Writer
	gone func()
	once sync.Once
}

func (b *brokenOutput) Write(p []byte) (int, error) {
	n, err := b.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		b.once.Do(b.gone)
	}
	return n, err
}

// localMonitor turns the children's lines into the progress bar, prefixed terminal lines and
// the loss history.
type localMonitor struct {
	run   config.Run
	out   string
	w     io.Writer
	quiet bool
	bar   *progressbar.ProgressBar

	// stopping: the run is over and local stops the coordinators; what they say while shutting
	// down (a leader's "lost leadership") is for their logs, not the terminal.
	stopping atomic.Bool

	mu     sync.Mutex
	points map[int64]viz.LossPoint
	last   trainer.Progress
	// first is the first step report of this session and when it came, for the ETA.
	first   trainer.Progress
	firstAt time.Time
	// journal is loss.csv held open for appending while the run is up: every step is added to
	// it as it is reported, so that a supervisor killed outright (SIGKILL, a crash) leaves every
	// loss point seen so far for --resume; writeLoss rewrites it sorted at the end. nil when it
	// could not be opened (the points then reach the file only at the end).
	journal *os.File
	// keepCSV: loss.csv could be neither read nor moved aside; it is left as it is, neither
	// journaled to nor rewritten at the end.
	keepCSV bool
}

func newLocalMonitor(run config.Run, out string, w io.Writer, quiet bool) *localMonitor {
	m := &localMonitor{run: run, out: out, w: w, quiet: quiet, points: map[int64]viz.LossPoint{}}
	isTerm := false
	tw := w
	if b, ok := w.(*brokenOutput); ok {
		tw = b.w
	}
	if f, ok := tw.(*os.File); ok {
		isTerm = term.IsTerminal(int(f.Fd()))
	}
	if !quiet && isTerm {
		m.bar = progressbar.NewOptions64(run.Steps,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("step"),
			progressbar.OptionShowCount(),
			// The bar's own prediction prints float nanoseconds ("601620h1m52.290448384s");
			// the description carries the ETA instead (etaString).
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return m
}

// loadEarlier reads the loss.csv of earlier sessions of the run; steps replayed after the
// resume replace their records (with the same values: the run is deterministic).
// A missing loss.csv is no error. One that cannot be read is renamed to loss.csv.unreadable
// for the user to look at, and the history starts again from this session's steps (the error
// says so); if it cannot be renamed either, it is left as it is (keepCSV).
func (m *localMonitor) loadEarlier() error {
	path := filepath.Join(m.out, localrun.LossCSV)
	pts, err := viz.ReadLossCSV(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		aside := path + ".unreadable"
		if rerr := os.Rename(path, aside); rerr != nil {
			m.keepCSV = true
			return fmt.Errorf("%w; left as it is, without this session's steps (%v)", err, rerr)
		}
		return fmt.Errorf("%w; moved to %s, %s starts again from this session's steps", err, aside, localrun.LossCSV)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range pts {
		m.points[p.Step] = p
	}
	return nil
}

// openJournal rewrites loss.csv from the points known so far (sorted, whole lines only) and
// keeps it open to append each new step to (see localMonitor.journal). An error leaves the
// journal off.
func (m *localMonitor) openJournal() error {
	path := filepath.Join(m.out, localrun.LossCSV)
	if err := viz.WriteLossCSV(path, m.sorted()); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.journal = f
	m.mu.Unlock()
	return nil
}

// closeJournal stops appending to loss.csv.
func (m *localMonitor) closeJournal() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.journal != nil {
		m.journal.Close()
		m.journal = nil
	}
}

func (m *localMonitor) line(name string, line []byte) {
	if p, ok := trainer.ParseProgress(line); ok {
		m.mu.Lock()
		// Every rank reports the same global loss; a replayed step (after a resume or a
		// re-ring) replaces the earlier record of that step.
		pt := lossPoint(p)
		if old, seen := m.points[p.Step]; (!seen || !sameLossPoint(old, pt)) && m.journal != nil {
			// One write of one whole line: a kill of this process leaves no half line. A failed
			// write (a full disk) may have left part of one: appending more would bury it
			// mid-file, so the journal stops and loss.csv is rewritten whole at the end.
			if _, err := m.journal.Write(viz.LossCSVRow(pt)); err != nil {
				m.journal.Close()
				m.journal = nil
				fmt.Fprintf(m.w, "ddpm local: appending to %s failed (%v); it is written whole at the end of the run\n", localrun.LossCSV, err)
			}
		}
		m.points[p.Step] = pt
		if p.Step >= m.last.Step || p.Rank == 0 {
			m.last = p
		}
		if m.firstAt.IsZero() {
			m.first, m.firstAt = p, time.Now()
		}
		last := m.last
		eta := "?"
		if done, took := last.Step-m.first.Step, time.Since(m.firstAt); done > 0 && took > 0 {
			eta = etaString(took.Seconds() / float64(done) * float64(m.run.Steps-last.Step))
		}
		m.mu.Unlock()
		if m.bar != nil {
			m.bar.Describe(fmt.Sprintf("loss %.4f  %5.1f img/s  world %d  ETA %s  step", last.Loss, last.ImagesPerS, last.World, eta))
			_ = m.bar.Set64(last.Step)
		} else if !m.quiet && (p.Rank == 0 && (p.Step%50 == 0 || p.Step == m.run.Steps)) {
			m.println(fmt.Sprintf("[%s] step %d/%d loss %.5f lr %.3g grad_norm %.3g %.1f img/s world %d",
				name, p.Step, m.run.Steps, p.Loss, p.LR, p.GradNorm, p.ImagesPerS, p.World))
		}
		return
	}
	if m.quiet || (m.stopping.Load() && strings.HasPrefix(name, "coordinator")) || !worthShowing(name, line) {
		return
	}
	if note := runCompleteNote(line); note != "" {
		// A trainer the run finished without: its sentence says where the final checkpoint is.
		m.println("[" + name + "] " + note)
		return
	}
	m.println("[" + name + "] " + renderLine(line, true))
}

// etaString words a remaining time of sec seconds for the progress bar in whole seconds, and a
// day or more in days and hours: "0s", "42s", "1h1m52s", "25067d12h" (the bar's own
// prediction of a huge run showed nanoseconds). Not a positive number: "0s".
func etaString(sec float64) string {
	if !(sec > 0) {
		return "0s"
	}
	if sec < 24*3600 {
		return (time.Duration(math.Round(sec)) * time.Second).String()
	}
	h := math.Round(sec / 3600)
	d := math.Floor(h / 24)
	return fmt.Sprintf("%.0fd%.0fh", d, h-24*d)
}

// runCompleteNote is the note of a trainer's "run complete" JSON line (one that came back after
// its run finished without it says so there, see logFinishedWithout), "" for any other line.
func runCompleteNote(line []byte) string {
	if !logMsgIs(line, trainer.MsgRunComplete) {
		return ""
	}
	var rec struct {
		Note string `json:"note"`
	}
	if json.Unmarshal(line, &rec) != nil {
		return ""
	}
	return rec.Note
}

// humanLine renders a child's JSON log line as "LEVEL msg key=value ..." (the log file keeps
// the JSON); other lines pass through.
func humanLine(line []byte) string { return renderLine(line, false) }

// renderLine is humanLine; with short (the terminal's lines above the progress bar), a value
// that is a sha256 in hex (64 digits: the run config's hash, a checkpoint's digest) shows its
// first 12 digits, as the run's first line shows its config, and the log keeps it whole.
func renderLine(line []byte, short bool) string {
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil {
		return strings.TrimRight(string(line), "\n")
	}
	var b strings.Builder
	if lvl, _ := rec["level"].(string); lvl != "" && lvl != "INFO" {
		b.WriteString(lvl + " ")
	}
	fmt.Fprint(&b, rec["msg"])
	keys := make([]string, 0, len(rec))
	for k := range rec {
		switch k {
		case "time", "level", "msg", "trainer", "role", "id":
		default:
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if s, ok := rec[k].(string); ok && short && isSHA256Hex(s) {
			rec[k] = s[:12]
		}
		v, _ := json.Marshal(rec[k])
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

// isSHA256Hex reports whether s is 64 lowercase hex digits.
func isSHA256Hex(s string) bool {
	return len(s) == 64 && strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') }) < 0
}

// worthShowing keeps the terminal readable: trainers' lines except DEBUG, coordinators' warnings
// and errors and their leadership changes. Everything is in the log files regardless.
func worthShowing(name string, line []byte) bool {
	lvl := levelOf(line)
	if strings.HasPrefix(name, "trainer") {
		return lvl != "DEBUG"
	}
	if lvl == "WARN" || lvl == "ERROR" {
		return true
	}
	for _, msg := range []string{coordinator.MsgBecameLeader, coordinator.MsgLostLeadership} {
		if logMsgIs(line, msg) {
			return true
		}
	}
	return false
}

func levelOf(line []byte) string {
	for _, l := range []string{"ERROR", "WARN", "INFO", "DEBUG"} {
		if bytes.Contains(line, []byte(`"level":"`+l)) || bytes.Contains(line, []byte("level="+l)) || bytes.Contains(line, []byte("["+l)) {
			return l
		}
	}
	return ""
}

func (m *localMonitor) println(s string) {
	if m.bar != nil {
		_ = m.bar.Clear()
	}
	fmt.Fprintln(m.w, s)
	if m.bar != nil {
		_ = m.bar.RenderBlank()
	}
}

func (m *localMonitor) finish() {
	if m.bar != nil {
		_ = m.bar.Exit()
		fmt.Fprintln(m.w)
	}
}

// lossPoint is p's row of loss.csv. A step skipped for a non-finite gradient (no rank updated
// the model) keeps its row, with grad_norm NaN as its mark and the loss as measured (NaN or
// infinite when that was not finite); loss.png leaves it out (plotted).
func lossPoint(p trainer.Progress) viz.LossPoint {
	pt := viz.LossPoint{Step: p.Step, Loss: p.Loss, LR: p.LR, GradNorm: p.GradNorm}
	if p.Skipped {
		pt.GradNorm = math.NaN()
	}
	return pt
}

// skippedPoint reports whether pt is the row of a skipped step (lossPoint).
func skippedPoint(pt viz.LossPoint) bool { return math.IsNaN(pt.GradNorm) }

// plotted returns the points of loss.png: pts without the skipped steps.
func plotted(pts []viz.LossPoint) []viz.LossPoint {
	return slices.DeleteFunc(slices.Clone(pts), skippedPoint)
}

// sameLossPoint reports whether a and b are the same row, NaN equal to NaN (a skipped step
// replayed after a resume is the same row again).
func sameLossPoint(a, b viz.LossPoint) bool {
	eq := func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }
	return a.Step == b.Step && eq(a.Loss, b.Loss) && eq(a.LR, b.LR) && eq(a.GradNorm, b.GradNorm)
}

func (m *localMonitor) sorted() []viz.LossPoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	pts := make([]viz.LossPoint, 0, len(m.points))
	for _, p := range m.points {
		pts = append(pts, p)
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].Step < pts[j].Step })
	return pts
}

func (m *localMonitor) finalLoss() string {
	// The last step the model was trained at: a skipped step's loss (NaN, or measured with a
	// non-finite gradient) is no loss of the model the run ends with.
	pts := plotted(m.sorted())
	if len(pts) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.5f at step %d", pts[len(pts)-1].Loss, pts[len(pts)-1].Step)
}

// writeLoss writes loss.csv and loss.png from every step seen in this and earlier sessions.
func (m *localMonitor) writeLoss() error {
	m.closeJournal()
	pts := m.sorted()
	if len(pts) == 0 {
		return nil
	}
	if !m.keepCSV {
		if err := viz.WriteLossCSV(filepath.Join(m.out, localrun.LossCSV), pts); err != nil {
			return err
		}
	}
	title := fmt.Sprintf("%s: L_simple, global batch %d", filepath.Base(m.out), m.run.GlobalBatch)
	return viz.WriteLossPNG(filepath.Join(m.out, localrun.LossPNG), plotted(pts), title)
}

// runCommitted reports whether a trainer volume of the ddpm local run in out holds a committed
// checkpoint (read-only, before the trainers hold their volumes; one that cannot be read counts
// as none).
func runCommitted(out string) bool {
	file, err := trainer.CheckpointFileIn(out)
	if err != nil {
		return false
	}
	held, _ := holdsCommitted(file)
	return held
}

// minLiveness is the least positive --liveness-timeout: several probe periods (livenessProbes),
// so that one slow answer of a busy process never kills it.
const minLiveness = 5 * time.Second

// livenessProbes returns what makes the liveness probe of a child serving /healthz on a loopback
// port (a kubelet's httpGet livenessProbe; localrun.Liveness): a GET every limit/5 (1s to 10s),
// each bounded by that period and at most 5s (a kubelet's default period is 10s), over HTTPS
// verified with the run's CA in certs when the run serves --http-tls (/healthz needs no client
// certificate). limit is --liveness-timeout; 0 gives no probe (nil for every port).
func livenessProbes(certs string, httpTLS bool, limit time.Duration) (func(port int) *localrun.Liveness, error) {
	if limit <= 0 {
		return func(int) *localrun.Liveness { return nil }, nil
	}
	period := min(10*time.Second, max(time.Second, limit/5))
	timeout := min(5*time.Second, period)
	tr := &http.Transport{DisableKeepAlives: true} // each probe a connection of its own, as a kubelet's
	scheme := "http"
	if httpTLS {
		b, err := tlsauth.Load(tlsauth.Config{Dir: certs, ServerName: tlsauth.NodeName})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", certs, err)
		}
		tr.TLSClientConfig, scheme = b.HTTPClientTLS(), "https"
	}
	client := &http.Client{Transport: tr}
	return func(port int) *localrun.Liveness {
		return &localrun.Liveness{URL: scheme + "://" + localrun.Addr(port) + "/healthz", Client: client, Period: period, Timeout: timeout, Limit: limit}
	}, nil
}

// unresponsiveLine is ddpm local's line for a child its liveness probe kills, e.g. "ddpm local:
// trainer-1 (pid 4242) is unresponsive: GET http://127.0.0.1:PORT/healthz failed for 5.1s (no
// answer within 1s); killing it (SIGKILL) to restart it (--liveness-timeout 5s)".
func unresponsiveLine(u localrun.Unresponsive, limit time.Duration) string {
	return fmt.Sprintf("ddpm local: %s (pid %d) is unresponsive: GET %s failed for %v (%s); killing it (SIGKILL) to restart it (--liveness-timeout %v)",
		u.Name, u.Pid, u.URL, u.Failed.Round(100*time.Millisecond), u.Why, limit)
}
