package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/dataset"
	"ddpm/internal/atomicfile"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
	"ddpm/trainer"
	"ddpm/unet"
)

type trainerOpts struct {
	id          string
	coordinator string
	listen      string
	advertise   string // the address peers and coordinators reach this trainer at; "" : listen
	httpAddr    string
	dataDir     string
	standalone  bool
	init        string
	sec         *tlsauth.Config // --certs / --insecure (cluster mode only)
	// certRefusalWait is --cert-refusal-wait: how long a joining cluster trainer that hears
	// only certificate refusals keeps trying before it exits with status 2.
	certRefusalWait time.Duration
	// stallLimit is --stall-limit: how long /healthz lets work go without completing a step
	// or using the CPU (0: stallAfter's rule; checkStallLimit).
	stallLimit time.Duration
	// stayAfterDone is --stay-after-done: once the run has succeeded, a cluster trainer stays up
	// idle (stayUpAfterDone) instead of exiting 0.
	stayAfterDone bool
	// httpTLS is --http-tls: --http-addr over HTTPS (tlsauth.Bundle.HTTPServer), /metrics only
	// to a client certificate of the cluster's CA.
	httpTLS bool
	// initGone is why the --init weights could not be read (nil: read, or no --init): a
	// cluster trainer checks before it joins that the run does not start at step 0 from them
	// (checkInitBeforeJoin).
	initGone error
	// bind writes the volume's run.yaml (volumeClaim.bind); a cluster trainer calls it once
	// the coordinators accepted its run config (its join succeeded), a standalone one at once.
	bind func() error
	// lis and httpLis are --listen and --http-addr, bound by runTrainer before the volume is
	// created or written (nil: runClusterTrainer binds them itself).
	lis, httpLis net.Listener
}

func newTrainerCmd() *cobra.Command {
	var o trainerOpts
	cmd := &cobra.Command{
		Use:   "trainer --coordinator ADDR[,ADDR...] --listen ADDR --data-dir DIR",
		Short: "Run one trainer: join the cluster, train its share of every global batch",
		Long: `trainer joins the coordinators, waits for an assignment (generation, rank, world, ring
peers, start step), loads the assigned checkpoint from its own volume (--data-dir) or from a peer,
builds the all-reduce ring and trains: every step it computes the gradient of its slice of the
global batch, sums the gradients over the ring with the others, and takes the same clipped Adam
and EMA step as every other trainer, so all hold identical weights. SIGTERM finishes the step
in flight and leaves; nothing partial is written. --standalone trains a world of one with no
coordinator, committing its own checkpoints; it resumes from the newest one when started again.

--data-dir gets the run's run.yaml once the coordinators accept the run config (at once with
--standalone): a trainer refused for wrong run flags leaves the folder free for the right run.
A folder holding checkpoints of another run is refused; one whose run.yaml names another run
but holds no checkpoint is re-bound, with one log line.
Without --config and --preset a cluster trainer takes the run config from the coordinators
(the one they were started with); run-config flags given then override its fields.

A trainer dropped by the coordinators (stopped or cut off past heartbeat_timeout) whose --id a
newer process has taken since exits with status 3 and one line, "trainer ID: replaced by a newer
process at ADDR (incarnation N); exiting", without another word to the cluster. One that comes
back (or is started) after its run succeeded without it exits with status 0 and one "run
complete" line, "trainer ID: the run finished at step N without this trainer; this volume holds
step M; the final checkpoint is on IDS": its volume keeps the older committed checkpoint, and
the run folder of ddpm local resolves to a trainer holding the final one. With
--stay-after-done a trainer whose run has succeeded (with it or without it) stays up idle
instead, until SIGTERM: /healthz and /readyz answer 200 ("ok: the run is complete ..."),
--listen serves the volume's committed checkpoints to ddpm checkpoint fetch, and one log line
says so; a Kubernetes StatefulSet, which restarts a container that exits even with status 0,
then shows its pods Running rather than crash-looping.
A cluster trainer that leaves its run for a failure of its own (its copy of the data damaged:
exit 2; its volume full or failing: exit 1; one line each) records what failed in --data-dir's
fault.json. Started again, it checks exactly that before it joins (it reads the record that
failed, whose prepared shard's sha256 is computed again, or writes a file of one checkpoint
save's size): while the fault is there it exits again with status 2 or 1 and one line (the
data's line again, or the test write's size and error), ending with "or remove DIR/fault.json to
join anyway", without joining, so no new generation sends the others back to their last commit;
once it is gone the record is removed and the trainer joins (after the run has succeeded, it ends
as any finished run's trainer). From its join on, --data-dir keeps 16 KiB for that record
(.fault-reserve), so a volume that fills up completely still records it.
A cluster trainer whose checkpoints.db cannot be opened (damaged, cut short) moves it aside, kept as
checkpoints.db.damaged-UTCTIME, and starts a fresh one when another trainer that is a member holds
the run's newest committed checkpoint (waiting up to a minute for one to join): it fetches that
checkpoint from it. Otherwise it leaves the file as it is and exits with status 2 and one line
(the file may be the run's only copy).
A cluster trainer whose --init file is missing while the run has no committed checkpoint (every
generation then starts at step 0 from it) does not join: while other trainers train the run it
waits for its first committed checkpoint (one log line), then joins and takes it from a peer;
when nobody trains it, it exits with status 2 and one line naming the file.
--coordinator may name one replica: the trainer learns the others' addresses from the replicas' answers.
--advertise names the address peers reach this trainer at when it is not --listen (a stable DNS
name such as a StatefulSet pod's); a newer process under the same name and --id is told apart
from this one by a random token each process joins with, not by its address.

--http-addr serves /healthz (liveness: 503 once work goes --stall-limit without completing a
step or using the CPU; waiting on others is live for any time) and /readyz (a member now).
--stall-limit 0 (the default) means 10 minutes, or 4 x the run's heartbeat_timeout if longer;
raise it for steps or checkpoint writes that block without computing for longer. It is at least
1 minute: computing is judged from the CPU used between two probes (a kubelet probes every 10 s
by default), so a limit near the probe period would fail a healthy trainer mid-step and restart it.

A trainer given the certificates of another cluster (--certs of another CA) hears only
certificate refusals from the coordinators; after --cert-refusal-wait of nothing else (30s by
default) it exits with status 2 and one line saying to give --certs this cluster's CA.`,
		Args: cobra.NoArgs,
	}
	rf := config.AddFlags(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "this trainer's member id (default: the hostname)")
	f.StringVar(&o.coordinator, "coordinator", "", "coordinator gRPC addresses, comma-separated")
	f.StringVar(&o.listen, "listen", "", "gRPC address for the all-reduce ring and checkpoint transfer (host:port)")
	f.StringVar(&o.advertise, "advertise", "", "address the ring peers and the coordinators are told to reach this trainer at, when not --listen (host:port: a stable DNS name in front of it, a NAT)")
	f.StringVar(&o.httpAddr, "http-addr", "", "HTTP address for /metrics, /healthz and /readyz (empty: none)")
	f.BoolVar(&o.httpTLS, "http-tls", false, httpTLSUsage)
	f.StringVar(&o.dataDir, "data-dir", "", "this trainer's volume: checkpoints.db and run.yaml (required)")
	f.BoolVar(&o.standalone, "standalone", false, "train a world of one without coordinators")
	f.StringVar(&o.init, "init", "", "safetensors weights to start from instead of the seed's initialization (recorded in the volume's init.txt for ddpm sample)")
	f.DurationVar(&o.stallLimit, "stall-limit", 0, "/healthz answers 503 after work (a ring, a step, a checkpoint write) goes this long without completing a step or using the CPU (at least 1m; 0: 10m, or 4 x heartbeat_timeout if longer)")
	f.BoolVar(&o.stayAfterDone, "stay-after-done", false, "once the run has succeeded, stay up idle until SIGTERM instead of exiting 0: /healthz and /readyz answer 200 and --listen serves this volume's committed checkpoints to ddpm checkpoint fetch (for a Kubernetes StatefulSet, which restarts a container that exits)")
	f.DurationVar(&o.certRefusalWait, "cert-refusal-wait", defaultCertRefusalWait, "how long joining may hear only certificate refusals (--certs of another cluster's CA) before the trainer exits with status 2 (positive)")
	o.sec = tlsauth.AddFlags(f)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// Read before o is handed on: its fields are the flags' values.
		onCmdline := changedFlags(cmd.Flags())
		if err := flagsFromEnvOnly(cmd.Flags(), trainerEnvFlags...); err != nil {
			return withExit(2, err)
		}
		return runTrainer(cmd, rf, o, onCmdline)
	}
	return cmd
}

func init() { rootCmd.AddCommand(newTrainerCmd()) }

// newProcessLogger logs text on a terminal and JSON otherwise (DESIGN.md section 8); `ddpm
// local` reads the JSON lines of its children.
func newProcessLogger(attrs ...any) *slog.Logger {
	var h slog.Handler
	if term.IsTerminal(int(os.Stdout.Fd())) {
		h = slog.NewTextHandler(os.Stdout, nil)
	} else {
		h = slog.NewJSONHandler(os.Stdout, nil)
	}
	return slog.New(h).With(attrs...)
}

// standaloneDataset is the dataset a standalone trainer records in its volume's run.yaml: the
// path made absolute (absDataset), except in a volume an older version bound to the path as
// given, whose checkpoints would otherwise read as another run's (the dataset is in the hash).
func standaloneDataset(dir string, run config.Run) string {
	if volumeBoundTo(dir, run) {
		return run.Dataset
	}
	return absDataset(run.Dataset)
}

// volumeBoundTo reports whether the trainer volume dir's run.yaml records run (the same config
// hash): the volume already trains it, whatever version bound it.
func volumeBoundTo(dir string, run config.Run) bool {
	old, err := config.Load(filepath.Join(dir, trainer.ConfigFile))
	return err == nil && old.Hash() == run.Hash()
}

// volumeClaim is what checkDataDir found in a trainer's volume: whether its run.yaml must be
// written for this run, and the other run's config hash when it names one (a volume without
// checkpoints, re-bound). init and empty say what bind records in the volume's InitFile.
type volumeClaim struct {
	dir, other string
	write      bool
	run        config.Run
	// init is the --init weights' absolute path ("" without --init); empty: the volume holds
	// no checkpoint, so a run without --init starts in it from the seed's initialization.
	init  string
	empty bool
}

// checkDataDir decides whether dir (created if absent) may be the volume of run, writing
// nothing in it. A volume whose run.yaml names this run, or that has none, may; so may one whose
// run.yaml names another run while it holds no checkpoint (a trainer refused by the
// coordinators left it, or nothing was ever trained into it): it is re-bound. A volume holding
// checkpoints of another run is refused, untouched.
func checkDataDir(dir string, run config.Run) (volumeClaim, error) {
	c := volumeClaim{dir: dir, run: run}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return c, err
	}
	p := filepath.Join(dir, trainer.ConfigFile)
	old, err := config.Load(p)
	switch {
	case err == nil && old.Hash() == run.Hash():
		return c, nil
	case err == nil:
		n, cerr := volumeCheckpoints(dir)
		if cerr != nil {
			return c, cerr
		}
		if n > 0 {
			return c, fmt.Errorf("--data-dir %s holds checkpoints of a different run (config %.12s, this run %.12s); use another folder", dir, old.Hash(), run.Hash())
		}
		c.other = old.Hash()
	case !errors.Is(err, os.ErrNotExist):
		if _, serr := os.Stat(p); serr == nil {
			return c, err
		}
	}
	c.write = true
	return c, nil
}

// volumeCheckpoints counts the checkpoints, committed or not, in dir's checkpoint file (0 when
// there is none).
func volumeCheckpoints(dir string) (int, error) {
	p := filepath.Join(dir, trainer.CheckpointFile)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	st, err := checkpoint.Open(p, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	infos, err := st.List()
	return len(infos), err
}

// holdsCommitted reports whether the checkpoint file at path holds a committed checkpoint,
// opening it read-only: false and nil when there is no file; the open's or listing's error when
// it cannot be read now (each caller decides what that means).
func holdsCommitted(path string) (bool, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	st, err := checkpoint.Open(path, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return false, err
	}
	defer st.Close()
	infos, err := st.List()
	return err == nil && slices.ContainsFunc(infos, func(in checkpoint.Info) bool { return in.Committed }), err
}

// bind writes the volume's run.yaml for c's run if it lacks one or names another run (saying so
// in one log line when it re-binds a volume without checkpoints).
//
// It records the --init weights in the volume's trainer.InitFile, so that `ddpm sample` of an
// early checkpoint does not call its EMA a random start (sampleEMAWarning); a trainer without
// --init removes the record from a volume holding no checkpoint (a new run starts there), and
// leaves it in one whose checkpoints came from those weights.
func (c volumeClaim) bind(log *slog.Logger) error {
	if c.write {
		if c.other != "" {
			log.Warn("volume re-bound to this run: its run.yaml named another run and it holds no checkpoint",
				"data_dir", c.dir, "old_config", c.other, "config", c.run.Hash())
		}
		if err := os.WriteFile(filepath.Join(c.dir, trainer.ConfigFile), c.run.Marshal(), 0o644); err != nil {
			return err
		}
	}
	p := filepath.Join(c.dir, trainer.InitFile)
	switch {
	case c.init != "":
		return os.WriteFile(p, []byte(c.init+"\n"), 0o644)
	case c.empty:
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// runTrainer runs `ddpm trainer` with the options o; onCmdline names the flags the command line
// set (changedFlags: the others came from the environment, trainerEnvFlags, or are defaults).
func runTrainer(cmd *cobra.Command, rf *config.Flags, o trainerOpts, onCmdline map[string]bool) error {
	if o.dataDir == "" {
		return withExit(2, errors.New("--data-dir is required"))
	}
	// A ddpm local run folder given as the volume: refused before anything reads or writes
	// there. Its run.yaml is the local run's, and re-binding it (the checkpoints are in its
	// trainer-N folders, so it looked like a volume without any) left the run unable to resume.
	if localrun.IsRunFolder(o.dataDir) {
		return withExit(2, fmt.Errorf("--data-dir %s: a ddpm local run folder, not a trainer's volume; give one of its trainer folders (%s, as the run's own trainers use) or a new folder",
			o.dataDir, filepath.Join(o.dataDir, "trainer-N")))
	}
	// A coordinator's data dir given as the volume: the trainer wrote checkpoints.db and
	// run.yaml beside raft.db, and the replica, restarted, refused the folder as a trainer's.
	if _, err := os.Stat(filepath.Join(o.dataDir, "raft.db")); err == nil {
		return withExit(2, fmt.Errorf("--data-dir %s: a coordinator's data dir (raft.db), not a trainer's volume; give a new folder", o.dataDir))
	}
	if err := checkStallLimit(o.stallLimit); err != nil {
		return withExit(2, err)
	}
	if o.standalone && o.httpTLS {
		given := "--http-tls"
		if !onCmdline["http-tls"] {
			given = envKey("http-tls")
		}
		return withExit(2, fmt.Errorf("%s is for a cluster trainer: a standalone trainer serves no HTTP", given))
	}
	if err := checkHTTPTLS("trainer", o.httpTLS, o.httpAddr, o.sec, onCmdline); err != nil {
		return err
	}
	// The replicas' rule for a listen address (coordinator.ListenAddrProblem), before anything binds.
	if why := coordinator.ListenAddrProblem(o.httpAddr); o.httpAddr != "" && why != "" {
		return withExit(2, fmt.Errorf("trainer: --http-addr %s: %w (%s)", o.httpAddr, coordinator.ErrBadAddr, why))
	}
	if err := checkDistinctPorts("trainer", "--listen", o.listen, "--http-addr", o.httpAddr); !o.standalone && err != nil {
		return withExit(2, err)
	}
	if o.certRefusalWait <= 0 {
		return withExit(2, fmt.Errorf("--cert-refusal-wait %v: want a positive duration (default %v)", o.certRefusalWait, defaultCertRefusalWait))
	}
	if o.standalone && o.stayAfterDone {
		return withExit(2, errors.New("--stay-after-done is for a cluster trainer: a standalone trainer serves no checkpoints (ddpm sample, eval and checkpoint export read its --data-dir once it has exited)"))
	}
	// A cluster trainer's flags with --standalone were ignored without a word: the trainer
	// trained alone while the command line asked for a cluster, a ring port or an HTTP port.
	// (Only flags on the command line: DDPM_* values of a pod template are shared by both.)
	if o.standalone {
		for _, f := range []string{"coordinator", "listen", "advertise", "http-addr"} {
			if onCmdline[f] {
				return withExit(2, fmt.Errorf("--%s is for a cluster trainer: a standalone trainer (--standalone) trains alone, with no coordinator, ring or HTTP port; drop --%s, or --standalone to join a cluster", f, f))
			}
		}
	}
	if !o.standalone && (o.coordinator == "" || o.listen == "") {
		return withExit(2, errors.New("--coordinator and --listen are required (or --standalone)"))
	}
	if !o.standalone {
		if o.advertise != "" {
			// Peers dial the advertised address; --listen may then be a wildcard.
			if err := checkListen(o.advertise); err != nil {
				return withExit(2, fmt.Errorf("--advertise %s: %w", o.advertise, err))
			}
			if err := checkHostPort(o.listen); err != nil {
				return withExit(2, fmt.Errorf("--listen %s: %w", o.listen, err))
			}
		} else if err := checkListen(o.listen); err != nil {
			return withExit(2, fmt.Errorf("--listen %s: %w", o.listen, err))
		}
		for _, a := range strings.Split(o.coordinator, ",") {
			if err := checkHostPort(a); err != nil {
				return withExit(2, fmt.Errorf("--coordinator %s: %w", a, err))
			}
		}
	}
	var sec *tlsauth.Bundle // the cluster's certificates (a cluster trainer's)
	if !o.standalone {
		// A certificate of another role (a coordinator's, an operator's): refused before the
		// coordinators are asked anything and before the volume is made or opened.
		var err error
		if sec, err = loadSecurity(o.sec, nil); err != nil {
			return err
		}
		if err := certRoleFor(sec, "trainer", tlsauth.RoleTrainer, o.sec.Dir); err != nil {
			return err
		}
	}
	if o.id == "" {
		o.id, _ = os.Hostname()
	}
	run, err := rf.Resolve()
	fromCoordinators := false
	if errors.Is(err, config.ErrNoRunConfig) && !o.standalone {
		// The documented start: the coordinators hold the run config.
		if run, err = runFromCoordinator(cmd.Context(), rf, o); err != nil {
			return err
		}
		fromCoordinators = true
	} else if err != nil {
		return withExit(2, err)
	}
	// A new run on a test split is refused; one the coordinators already hold, or one this
	// volume already trains (bound by a version that took it), goes on: refusing it would
	// leave that run without a way to continue.
	if err := checkTrainSplit(run.Dataset); err != nil && !fromCoordinators && !volumeBoundTo(o.dataDir, run) {
		return withExit(2, err)
	}
	if o.standalone {
		// The volume's run.yaml is the run's record, read again from any directory (a restart,
		// ddpm sample and eval on it). A cluster trainer keeps the path as given: its config
		// hash must match the coordinators', which hold the run config of trainers on other
		// machines, and a path is made absolute only where it is read.
		run.Dataset = standaloneDataset(o.dataDir, run)
	}
	ucfg, err := unet.Preset(run.Model)
	if err != nil {
		return withExit(2, err)
	}
	// A folder of greyscale images is read with the model's channels (dataset.Options.Channels):
	// one plane, or the grey level in three for a 3-channel model, as ddpm local checks it.
	ds, err := dataset.Open(run.Dataset, dataset.Options{Channels: ucfg.InCh})
	if err != nil {
		return withExit(2, fmt.Errorf("dataset %q: %w", run.Dataset, err))
	}
	if run.DatasetFingerprint != "" && ds.Fingerprint() != run.DatasetFingerprint {
		return withExit(2, fmt.Errorf("dataset %s has fingerprint %s, the run pins %s", run.Dataset, ds.Fingerprint(), run.DatasetFingerprint))
	}
	tr, err := trainer.New(run, ds)
	if err != nil {
		return withExit(2, err)
	}
	// initGone: the --init weights are not there. A trainer that resumes from a committed
	// checkpoint needs none of them (the checkpoint holds the run's state and its start record):
	// a Kubernetes pod whose --init file was moved crash-looped on it. A standalone trainer
	// knows at once (its volume is its run); a cluster trainer learns it from its assignment
	// (a new pod's empty volume takes the run's checkpoint from a peer), and one that starts
	// at step 0 fails there (trainer.ErrInitGone, exit 2).
	var initGone error
	if o.init != "" {
		if err := checkWeightsKind("--init", o.init); err != nil {
			return err
		}
		if err := tr.InitFrom(o.init); errors.Is(err, fs.ErrNotExist) {
			initGone = err
			tr.DeferInit(err)
		} else if err != nil {
			return withExit(2, err)
		}
	}
	dbPath := filepath.Join(o.dataDir, trainer.CheckpointFile)
	if fi, err := os.Stat(dbPath); err == nil && fi.IsDir() {
		// bbolt cannot open it, and it was taken for a damaged file and moved aside.
		return withExit(2, fmt.Errorf("%s is a directory, not a checkpoint file: move it out of --data-dir %s (the trainer keeps its checkpoints in a file of that name)", dbPath, o.dataDir))
	}
	// A cluster trainer's ports are bound before the volume is created or written: one in use
	// is refused (trainerListen) with nothing left in --data-dir.
	if !o.standalone {
		if o.lis, err = trainerListen("--listen", o.listen); err != nil {
			return err
		}
		defer o.lis.Close()
		if o.httpAddr != "" {
			if o.httpLis, err = trainerListen("--http-addr", o.httpAddr); err != nil {
				return err
			}
			defer o.httpLis.Close()
		}
	}
	// A trainer that ends before the coordinators accepted it (a wrong --coordinator, refused
	// run flags, stopped while joining) leaves --data-dir as it found it: the folders it made
	// and a checkpoint file it made that holds nothing are removed (removeEmptyDirs,
	// removeUnusedFile).
	bound := false
	made := missingDirs(o.dataDir)
	defer func() {
		if !bound {
			removeEmptyDirs(made)
		}
	}()
	// Only a run that checked out may use the volume: a refused command writes nothing in it.
	claim, err := checkDataDir(o.dataDir, run)
	if err != nil {
		return withExit(2, err)
	}
	if initGone != nil && o.standalone {
		// A new run starts from them: refused before the volume is written. A file that cannot
		// be read now may hold one (the trainer's own opening of it says why).
		if held, err := holdsCommitted(dbPath); !held && err == nil {
			return withExit(2, initGone)
		}
	}
	emptyDB, err := emptyCheckpointFile(dbPath, o.standalone)
	if err != nil {
		return withExit(2, err) // a standalone trainer's only record, gone: no restart changes it
	}
	log := newProcessLogger("trainer", o.id)
	_, serr := os.Stat(dbPath)
	newDB := errors.Is(serr, fs.ErrNotExist)
	store, err := openVolume(dbPath, o.standalone)
	if err != nil && !o.standalone && errors.Is(err, checkpoint.ErrCorruptCheckpoint) {
		// A damaged file: moved aside for a fresh one when a peer holds the run's newest
		// committed checkpoint, refused (status 2) when this file may be its only copy.
		store, err = recoverDamagedVolume(cmd.Context(), sec, o, dbPath, err, log)
	}
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		// Under ddpm local the way on is resuming the run (restartAdvice).
		return withExit(1, advised(err, o.dataDir))
	}
	defer store.Close()
	defer func() {
		if newDB && !bound {
			removeUnusedFile(store, dbPath, log)
		}
	}()
	if o.init != "" {
		if claim.init, err = filepath.Abs(o.init); err != nil {
			return withExit(2, err)
		}
	}
	infos, err := store.List()
	if err != nil {
		return withExit(1, err)
	}
	claim.empty = len(infos) == 0
	if emptyDB {
		log.Warn(MsgEmptyCheckpointFile, "file", dbPath)
	}
	// Before the volume is offered to the cluster or resumed from: a damaged committed
	// checkpoint is no restart point (one line each).
	// A standalone trainer's volume is its run's only record: one whose committed checkpoints
	// are all damaged is refused as it is, not started over at step 0.
	uncommit := trainer.UncommitDamaged
	if o.standalone {
		uncommit = trainer.UncommitDamagedStandalone
	}
	if _, err := uncommit(store, log); err != nil {
		if o.standalone && errors.Is(err, checkpoint.ErrCorruptCheckpoint) {
			// Every committed checkpoint of its only record damaged: as an unreadable file, status 2.
			return withExit(2, err)
		}
		return withExit(1, err)
	}
	if initGone != nil && o.standalone {
		// A cluster trainer says so once the coordinators' state showed the run need not start
		// at step 0 (checkInitBeforeJoin).
		log.Info(MsgInitGoneResumes, "init", o.init, "err", initGone.Error())
	}

	// The first SIGTERM/SIGINT lets the step in flight finish; a second one aborts at once.
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		<-sigs
		log.Info("signal: finishing the current step, then leaving")
		close(stop)
		<-sigs
		cancel()
	}()

	node := &trainer.Node{Trainer: tr, Store: store, Fingerprint: ds.Fingerprint(), Log: log}
	// run.yaml binds the volume to the run: a cluster trainer writes it only once the
	// coordinators accepted its run config, so that one refused (wrong run flags) or never
	// answered leaves the volume free for the right run.
	o.bind = func() error {
		bound = true
		return claim.bind(log)
	}
	if o.standalone {
		if err := o.bind(); err != nil {
			return withExit(1, err)
		}
		node.Coord, node.Ring = trainer.SoloCoordinator{Store: store}, trainer.SoloRing
		log.Info("standalone trainer", "config", run.Hash(), "model", run.Model, "steps", run.Steps, "global_batch", run.GlobalBatch, "data", ds.Name())
		err := node.Run(ctx, stop)
		if err == nil && isClosed(stop) {
			logStoppedUnsaved(log, tr.StepCount(), volumeStep(store), run.CheckpointEvery)
		}
		return dataExit(err)
	}
	addrs := strings.Split(o.coordinator, ",")
	o.initGone = initGone
	// With --stay-after-done, a run that succeeds keeps the trainer up inside runClusterTrainer
	// (stayUpAfterDone), on the servers it already has.
	return dataExit(runClusterTrainer(ctx, stop, node, run, o, addrs))
}

// MsgStoppedUnsaved is the log message of a standalone trainer stopped (SIGTERM, Ctrl-C) past its
// volume's newest checkpoint: the steps since are not saved.
const MsgStoppedUnsaved = "stopped; the steps since this volume's newest checkpoint are not saved"

// logStoppedUnsaved says, for a standalone trainer stopped after step step while its volume's
// newest committed checkpoint is step held (0: none), that the steps after held are lost and
// where a restart begins, e.g. "stopped at step 45; this volume holds no checkpoint yet (one every
// 50 steps): started again, the trainer begins at step 0". It stopped without a word on that: a
// user stopping at step 45 of a checkpoint_every 50 run did not know the 45 steps were gone.
// Nothing is said when nothing is lost (stopped at a checkpoint).
func logStoppedUnsaved(log *slog.Logger, step, held, every int64) {
	if step <= held {
		return
	}
	note := fmt.Sprintf("stopped at step %d; this volume's newest checkpoint is step %d: started again, the trainer resumes from it and trains steps %d-%d again", step, held, held+1, step)
	if held == 0 {
		note = fmt.Sprintf("stopped at step %d; this volume holds no checkpoint yet (one every %d steps): started again, the trainer begins at step 0", step, every)
	}
	log.Info(MsgStoppedUnsaved, "step", step, "checkpoint", held, "note", note)
}

// MsgFaultStillThere is the log message of a restarted cluster trainer that does not join
// because the failure of its own it last left the run for is still there (recheckFault).
const MsgFaultStillThere = "not joining: the failure this trainer left the run for is still there"

// MsgFaultGone is the log message of a restarted cluster trainer whose recorded failure is gone.
const MsgFaultGone = "the failure this trainer last left the run for is gone; joining"

// faultStateWait bounds how long recheckFault waits for the coordinators' state.
const faultStateWait = 10 * time.Second

// recheckFault checks again, before a cluster trainer joins, the failure of its own it last left
// its run for (trainer.FaultFile in its volume dir, written by recordFault; none: nil). While it
// is there the trainer exits as it did then, with its one line and status (2 for its data, 1 for
// its volume), without joining: a join would start a new generation, sending the healthy
// trainers back to the last committed checkpoint, only for this one to leave it at once (a
// Kubernetes pod restarted onto the same fault did so at every restart). Once it is gone (the
// data copied over again, room on the volume) the record is removed and the trainer joins. The
// check costs what the record names (trainer.Fault.Recheck): one record read, whose prepared
// shard's sha256 is computed again, or one write of the room a checkpoint save takes
// (trainer.SaveBytes); the whole dataset only for a data fault that names no record.
//
// It asks the coordinators' state first (faultStateWait at most; unreadable: the record alone
// decides): a run that has succeeded needs nothing of this trainer, which joins, is refused and
// ends as any trainer of a finished run (logFinishedWithout: status 0, or --stay-after-done); a
// checkpoint trained on other data that the run's committed line no longer holds (a rollback
// past it: lineageHolds) no longer says anything of this trainer's data. While the fault is
// there, the error's line ends saying how to join anyway (remove the record). A stop (SIGTERM)
// during the check ends it (nil: the caller sees stop closed). A record that does not parse is
// removed with a warning.
//
// ctx ends at the stop (trainer.UntilStop); state is the coordinators' state as read once
// before the join (stateOnce), asked only when there is a record.
func recheckFault(ctx context.Context, state func() (*fsm.State, error), dir string, node *trainer.Node) error {
	log := node.Log
	f, err := trainer.LoadFault(dir)
	if err != nil {
		log.Warn("the record of the failure this trainer last left the run for is unreadable; removed", "err", err)
		_ = trainer.ClearFault(dir)
		return nil
	}
	if f == nil {
		return nil
	}
	st, serr := state()
	if serr == nil && st.Status == fsm.StatusSucceeded {
		return nil
	}
	var lineage func(int64, string) bool
	if serr == nil {
		lineage = func(step int64, sha string) bool { return lineageHolds(st, step, sha) }
	}
	err = f.Recheck(ctx, node.Trainer, node.Fingerprint, dir, lineage)
	if ctx.Err() != nil {
		return nil // stopped during the check
	}
	if err != nil {
		record := filepath.Join(dir, trainer.FaultFile)
		attrs := []any{"kind", f.Kind, "record", record, "err", err.Error()}
		var ve *trainer.VolumeCheckError
		if errors.As(err, &ve) {
			attrs = append(attrs, "write_check", ve.Write.Error(), "bytes", f.Bytes, "was", f.Err)
		}
		if serr != nil {
			attrs = append(attrs, "state_err", serr.Error())
		}
		log.Error(MsgFaultStillThere, attrs...)
		// The way out when the record is wrong (or the operator knows better): without it the
		// trainer joins, and meets the fault again there if it is real.
		err = &advisedError{err: err, msg: fmt.Sprintf("%s; or remove %s to join anyway", restartAdvice(err.Error(), dir), record)}
		if f.Kind == trainer.FaultData {
			return withExit(2, err)
		}
		return withExit(1, err)
	}
	log.Info(MsgFaultGone, "kind", f.Kind, "was", f.Err)
	if err := trainer.ClearFault(dir); err != nil {
		return withExit(1, fmt.Errorf("removing %s: %w", filepath.Join(dir, trainer.FaultFile), err))
	}
	return nil
}

// stateOnce returns a function that reads the coordinators' state through cli at its first call
// (faultStateWait at most, ending with ctx; a state caught up with the leader's log:
// pollCaughtUp, since a replica restarted a moment ago answers with an older snapshot's state)
// and returns that answer at every call: the checks a
// cluster trainer makes before it joins (recheckFault, checkInitBeforeJoin) share one read-only
// look, and a trainer that needs none of them asks nothing.
func stateOnce(ctx context.Context, cli *coordinator.Client) func() (*fsm.State, error) {
	return sync.OnceValues(func() (*fsm.State, error) {
		sctx, cancel := context.WithTimeout(ctx, faultStateWait)
		defer cancel()
		return pollCaughtUp(sctx, cli)
	})
}

// MsgInitGoneResumes is the log message of a trainer whose --init weights are gone and that goes
// on: the run resumes from a committed checkpoint, which holds everything they gave it.
const MsgInitGoneResumes = "the --init weights are gone; a committed checkpoint of the run holds everything they gave it, and only a generation that starts at step 0 needs them"

// MsgInitGoneFreshRun is the log message of a cluster trainer that does not join because its
// --init weights are gone and the run has no committed checkpoint (checkInitBeforeJoin).
const MsgInitGoneFreshRun = "not joining: the --init weights are gone and the run has no committed checkpoint, so its generations start at step 0 from them"

// MsgInitGoneWaitsCommit is the log message of a cluster trainer whose --init weights are gone,
// in a run that has no committed checkpoint yet while other trainers train it: it waits for the
// first one before it joins (checkInitBeforeJoin).
const MsgInitGoneWaitsCommit = "the --init weights are gone and the run has no committed checkpoint yet; others train it: waiting for its first committed checkpoint before joining (it needs no weights then)"

// initGonePoll is how often checkInitBeforeJoin reads the coordinators' state while it waits.
const initGonePoll = 500 * time.Millisecond

// initGoneGrace is how long checkInitBeforeJoin waits on, for a run whose heartbeat timeout is
// hb, while no generation trains: long enough for a trainer dropped from it to be restarted
// and join again (ddpm local restarts one after 2 x hb + 1 s).
func initGoneGrace(hb time.Duration) time.Duration { return max(4*hb, 20*time.Second) }

// checkInitBeforeJoin decides, before it joins, about a cluster trainer whose --init weights are
// gone (initGone: InitFrom's error, naming the file; nil: nothing to check) in a run whose
// coordinators' state (state: stateOnce) lists no committed checkpoint: every generation such a
// run starts, starts at step 0 from the --init weights. Joined, the trainer was put in the next
// one (at once when the others waited for it, as at a run's start; when the ring broke, when
// they were training) and left it at once with trainer.ErrInitGone, sending the others back to
// step 0 twice. So it does not join then:
//   - while other trainers train the run (a generation of world > 0, members other than id), it
//     waits, without joining and reading the state (poll) every initGonePoll, for the run's first
//     committed checkpoint (at step every, the run's checkpoint_every), saying so in one log
//     line (MsgInitGoneWaitsCommit, with the run's other members); once it is committed the
//     trainer joins and takes it from a holder, as a trainer with an empty volume does. A
//     member that drops meanwhile (its generation ends) does not end the wait at once: it may
//     come back (a restarted trainer) within grace. A stop (ctx ends) ends the wait: nil, the
//     caller sees the stop. A run that ends meanwhile: nil (the join finds out);
//   - when nobody trains it (the others wait for more trainers, or there are none: a new run,
//     one rolled back to step 0), or while it waits every other member leaves or no generation
//     trains for longer than grace (the others wait for more trainers than they are: without
//     its weights this one cannot be the one they wait for), it is refused with one line naming
//     the file and what to do, status 2 (refused input, as dataExit), the others' generation
//     unchanged.
//
// A run that has a committed checkpoint needs no weights (the trainer takes the checkpoint from
// its volume or a peer), and one that has ended refuses the join its own way: nil for both; so
// does a trainer whose volume holds a committed checkpoint (held: volumeHeld) that the state does
// not say a rollback abandoned (fsm.State.Abandons), which its join brings back to coordinators
// that lost their record of it (fsm's adopt), the run then starting from it. One rolled back to
// step 0 holds only abandoned ones. A state that cannot be read leaves the join to find out, as
// before: nil (while waiting, an unreadable state is read again). A trainer let through because
// the run need not start at step 0 says so in one log line (MsgInitGoneResumes). initGone comes
// from a file that is not there (DeferInit is given only fs.ErrNotExist), and the line says so
// once; the log keeps the reader's words.
func checkInitBeforeJoin(ctx context.Context, state func() (*fsm.State, error), poll func(context.Context) (*fsm.State, error),
	id, init string, initGone error, held []fsm.Held, every int64, grace time.Duration, dir string, log *slog.Logger) error {
	if initGone == nil {
		return nil
	}
	st, err := state()
	if err != nil {
		log.Warn("the --init weights are gone and the coordinators' state is unreadable: joining; a generation that starts at step 0 would need them", "init", init, "err", err)
		return nil
	}
	if st.Status.Terminal() {
		return nil
	}
	if st.LatestCheckpoint() != nil || slices.ContainsFunc(held, func(h fsm.Held) bool { return !st.Abandons(h) }) {
		log.Info(MsgInitGoneResumes, "init", init, "err", initGone.Error())
		return nil
	}
	others := func(st *fsm.State) []string {
		return slices.Sorted(func(yield func(string) bool) {
			for m := range st.Members {
				if m != id && !yield(m) {
					return
				}
			}
		})
	}
	if st.Generation.World > 0 && len(others(st)) > 0 {
		log.Info(MsgInitGoneWaitsCommit, "init", init, "step", every, "generation", st.Generation.Number, "members", others(st), "err", initGone.Error())
		var idle time.Time // since when no generation trains (zero: one does)
		for len(others(st)) > 0 {
			if st.Generation.World > 0 {
				idle = time.Time{}
			} else if idle.IsZero() {
				idle = time.Now()
			} else if time.Since(idle) > grace {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(initGonePoll):
			}
			next, err := poll(ctx)
			if err != nil {
				continue
			}
			if next.Status.Terminal() {
				return nil
			}
			if ck := next.LatestCheckpoint(); ck != nil {
				log.Info(MsgInitGoneResumes, "init", init, "err", initGone.Error(), "step", ck.Step)
				return nil
			}
			st = next
		}
	}
	log.Error(MsgInitGoneFreshRun, "init", init, "generation", st.Generation.Number, "held", len(held), "err", initGone.Error())
	msg := fmt.Sprintf("trainer: --init %s does not exist; the run has no committed checkpoint, so its generations start at step 0 from these weights: "+
		"put the run's weights there (the file the other trainers started from), or start the trainers the run waits for with them (once it has a committed checkpoint this one needs none), and %s; "+
		"it has not joined the run", init, trainer.RestartAdvice)
	return withExit(2, &advisedError{err: fmt.Errorf("%w: %w", trainer.ErrInitGone, initGone), msg: restartAdvice(msg, dir)})
}

// advisedError is err with its line reworded (msg): errors.Is and errors.As still see err.
type advisedError struct {
	err error
	msg string
}

func (e *advisedError) Error() string { return e.msg }
func (e *advisedError) Unwrap() error { return e.err }

// restartAdvice rewords msg's trainer.RestartAdvice ("start the trainer again") for a trainer
// whose volume dir is a trainer folder of a ddpm local run (RUN/trainer-N, as ddpm local starts
// its trainers): ddpm local starts it again, so the way on is "resume the run (ddpm local
// --resume RUN)". msg is returned as it is for any other volume.
func restartAdvice(msg, dir string) string {
	run := filepath.Dir(dir)
	if !strings.HasPrefix(filepath.Base(dir), "trainer-") || !localrun.IsRunFolder(run) {
		return msg
	}
	return strings.Replace(msg, trainer.RestartAdvice, "resume the run (ddpm local --resume "+shellWord(run)+")", 1)
}

// advised is err with its line given the way on that is true for a trainer whose volume is dir
// (restartAdvice: under ddpm local, resuming the run instead of starting the trainer again); err
// itself when the line says no such thing. errors.Is and errors.As see err through it.
func advised(err error, dir string) error {
	msg := err.Error()
	if m := restartAdvice(msg, dir); m != msg {
		return &advisedError{err: err, msg: m}
	}
	return err
}

// lineageHolds reports whether the run's committed line, as the coordinators' state st tells it,
// still holds the checkpoint of step step with sha256 sha (one a fault record names). st lists
// only the newest keep_checkpoints commits (Checkpoints; Recommitted: pruned commits at steps of
// forgotten abandoned ones), so a checkpoint missing from them is not gone: every checkpoint of
// one line carries the data it started with, and the line holds a pruned one until a rollback
// goes back past it. It does not hold it only on evidence of that: a listed commit at step with
// another sha256; no commit at or past step (a rollback below it, or coordinators started
// afresh); the checkpoint abandoned by a rollback (fsm.State.Abandons, the state machine's own
// rule). A wrong answer errs towards "no longer": one join, which meets the fault again and
// records it again.
func lineageHolds(st *fsm.State, step int64, sha string) bool {
	newest := int64(0)
	for _, ck := range st.Checkpoints {
		if ck.Step == step {
			return ck.SHA256 == sha
		}
		newest = max(newest, ck.Step)
	}
	for _, h := range st.Recommitted {
		if h.Step == step {
			return h.SHA256 == sha
		}
	}
	return newest >= step && !st.Abandons(fsm.Held{Step: step, SHA256: sha})
}

// recordFault writes the volume dir's trainer.FaultFile for err, the failure of its own a cluster
// trainer leaves its run for (trainer.FaultOf: its data, its volume), for recheckFault at its
// next start. A volume too full for a new file takes it in the room kept for it since the
// trainer joined (trainer.SaveFaultReserved, reserveFaultRoom). A record that cannot be written
// either way is said in one log line: the restart then joins, as before such records.
func recordFault(dir string, node *trainer.Node, err error) {
	f, ok := trainer.FaultOf(err, node.Trainer)
	if !ok {
		return
	}
	werr := trainer.SaveFault(dir, f)
	if werr == nil {
		return
	}
	if rerr := trainer.SaveFaultReserved(dir, f); rerr != nil {
		node.Log.Warn("could not record the failure this trainer leaves for; a restart joins before it meets it again", "err", werr, "reserved_err", rerr)
		return
	}
	node.Log.Info("recorded the failure this trainer leaves for in the room kept for it", "record", filepath.Join(dir, trainer.FaultFile), "err", werr)
}

// reserveFaultRoom keeps room for a fault record in a cluster trainer's volume dir once it has
// joined (trainer.ReserveFault: a file of trainer.FaultReserveBytes, written while the volume has
// room), so that a volume that fills up later still records the failure this trainer leaves for
// (recordFault) and a restart onto it does not join. A volume without that much room is said in
// one log line; the trainer goes on (its first save will tell).
func reserveFaultRoom(dir string, log *slog.Logger) {
	if err := trainer.ReserveFault(dir); err != nil {
		log.Warn("could not keep room for a fault record in the volume; should it fill up, a restart joins before it meets that again", "err", err)
	}
}

// MsgStayingUp is the log line of a --stay-after-done trainer whose run has succeeded.
const MsgStayingUp = "the run is complete; the trainer stays up to serve this volume's committed checkpoints (ddpm checkpoint fetch) until SIGTERM"

// stayUpAfterDone keeps a cluster trainer whose run has succeeded (with it or without it) up and
// idle until stop (the first SIGTERM) or ctx ends, then returns nil (exit status 0). A
// StatefulSet (restartPolicy Always) restarts a container that exits, even with status 0, and
// each restart joins, hears the run is over and exits again: the pods crash-looped. It is a hook
// inside runClusterTrainer's run loop, which calls it once its heartbeats have stopped: the
// servers the loop started stay as they are, with every connection made to them, so no probe
// meets a closed port. --listen goes on serving this volume's checkpoints
// (checkpoint.RegisterTransfer: `ddpm checkpoint fetch` takes a committed one) with the cluster's
// mutual TLS (its ring service answers nothing: no generation follows a finished run), and
// health makes --http-addr's /healthz and /readyz answer 200, "ok: the run is complete (step N);
// ..." (/metrics keeps the run's series). One log line, MsgStayingUp, says so.
func stayUpAfterDone(ctx context.Context, stop <-chan struct{}, store *checkpoint.Store, run config.Run, o trainerOpts, health *trainerHealth, log *slog.Logger) error {
	held := volumeStep(store)
	health.done(fmt.Sprintf("the run is complete (step %d); serving this volume's committed checkpoints (newest: step %d) to ddpm checkpoint fetch", run.Steps, held))
	httpAddr := o.httpAddr
	if o.httpLis != nil {
		httpAddr = o.httpLis.Addr().String() // the port bound, which --http-addr :0 does not name
	}
	log.Info(MsgStayingUp, "listen", o.listen, "http_addr", httpAddr, "step", run.Steps, "volume_step", held)
	select {
	case <-stop:
	case <-ctx.Done():
	}
	log.Info("stopped after the run's end")
	return nil
}

// MsgEmptyCheckpointFile is the warning of a cluster trainer whose volume's checkpoint file was
// empty (0 bytes: cut short while bbolt created it, or emptied since).
const MsgEmptyCheckpointFile = "the volume's checkpoint file was empty (0 bytes); it starts afresh, and the trainer takes the run's committed checkpoint from the cluster"

// emptyCheckpointFile reports whether the checkpoint file at path exists and is empty (0 bytes),
// which bbolt would silently make a new, empty file of. A standalone trainer refuses it (the
// error): its volume is the run's only record, and starting over at step 0 would hide that the
// checkpoints it held are gone. A cluster trainer goes on (true, no error): the coordinators name
// the committed checkpoint to start from and a holder serves it, as for a new volume.
func emptyCheckpointFile(path string, standalone bool) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 0 || !fi.Mode().IsRegular() {
		return false, nil
	}
	if standalone {
		return true, fmt.Errorf("%s is empty (0 bytes), not a checkpoint file: the checkpoints of this volume are lost; move it aside to start the run over from step 0", path)
	}
	return true, nil
}

// openVolume opens the trainer's checkpoint file at path for writing. A file it cannot read
// (checkpoint.ErrCorruptCheckpoint: damaged pages, truncated, not a bbolt file) is refused with
// the way on added, as for an empty one (emptyCheckpointFile): a cluster trainer's is moved aside
// and the trainer started again (trainer.RestartAdvice, which the caller rewords for ddpm local:
// restartAdvice), and it takes the run's committed checkpoint from the cluster; a standalone
// trainer's is its run's only record: left as it is, exit status 2, the line saying to restore it
// from a copy or move it aside to start the run over from step 0.
func openVolume(path string, standalone bool) (*checkpoint.Store, error) {
	store, err := checkpoint.Open(path, checkpoint.Options{})
	switch {
	case err == nil || !errors.Is(err, checkpoint.ErrCorruptCheckpoint):
		return store, err
	case standalone:
		// As a cluster trainer's file that may hold its run's only copy (recoverDamagedVolume):
		// status 2, which no restart changes; the file stays as it is.
		return nil, withExit(2, fmt.Errorf("%w; it was left as it is: a standalone trainer's volume is its run's only record; "+
			"restore it from a copy, or move it aside to start the run over from step 0", err))
	default:
		return nil, fmt.Errorf("%w; move it aside and %s: it takes the run's committed checkpoint from the cluster", err, trainer.RestartAdvice)
	}
}

// damagedHolderWait bounds how long a cluster trainer whose checkpoint file is damaged waits for a
// trainer that holds the run's newest committed checkpoint to be a member (recoverDamagedVolume):
// after `ddpm local --resume` or a restart of every pod the holders join within seconds.
var damagedHolderWait = time.Minute

// MsgDamagedMovedAside is the warning of a cluster trainer that moved its damaged checkpoint file
// aside (recoverDamagedVolume) and goes on with a fresh one.
const MsgDamagedMovedAside = "the volume's checkpoint file is damaged: moved aside (kept) for a fresh one; the trainer takes the run's committed checkpoint from a peer that holds it"

// MsgDamagedWaitsHolder is the log line of a cluster trainer with a damaged checkpoint file that
// waits for a holder of the run's newest committed checkpoint to join (recoverDamagedVolume).
const MsgDamagedWaitsHolder = "the volume's checkpoint file is damaged; waiting for a trainer that holds the run's newest committed checkpoint to join before moving it aside"

// recoverDamagedVolume handles a cluster trainer whose checkpoint file at path cannot be opened
// as one (damage: openVolume's error wrapping checkpoint.ErrCorruptCheckpoint; not a lock held
// or a permission problem, which are not damage). It asks the coordinators' state (sec, the
// trainer's certificates; o.coordinator) whether another trainer holds the run's newest committed
// checkpoint and is a member now (holdsNow; waiting up to damagedHolderWait for one of its holders
// to join). If so, the file is of no use to the run: it is moved aside, kept under a name no file
// has (path.damaged-UTCTIME, moveAside), one warning line names both paths
// (MsgDamagedMovedAside), and a fresh file is opened at path: the trainer joins as one with an
// empty volume does and fetches that checkpoint from a holder (trainer.Node's load), so the run
// goes on with the same bits. Otherwise the file is left as it is and the trainer exits with
// status 2 (ddpm local stops the run at once rather than restart it onto the same file) and one
// line saying why and what to do: the run has no committed checkpoint (the coordinators may have
// lost their record and this file hold the run's only copy), no other trainer holds its newest
// one (this file may be its only copy), or none of its other holders joined within the wait. A
// state it could not read within the wait is status 1 (a restart asks again) with openVolume's
// line. Under ddpm local each line's way on is `ddpm local --resume RUN` (restartAdvice).
func recoverDamagedVolume(ctx context.Context, sec *tlsauth.Bundle, o trainerOpts, path string, openErr error, log *slog.Logger) (*checkpoint.Store, error) {
	damage := errors.Unwrap(openErr) // openVolume's error without its way on
	if damage == nil {
		damage = openErr
	}
	refuse := func(why string) error {
		msg := fmt.Sprintf("%v; it was left as it is: %s", damage, why)
		return withExit(2, &advisedError{err: openErr, msg: restartAdvice(msg, o.dataDir)})
	}
	cli, err := coordinator.Dial(strings.Split(o.coordinator, ","), sec, coordinator.WithLog(log))
	if err != nil {
		return nil, withExit(2, err)
	}
	defer cli.Close()
	// The coordinators get faultStateWait to answer with a caught-up state (at a whole run's
	// start they elect a leader and replay their logs meanwhile); the holders damagedHolderWait to join.
	deadline := time.Now().Add(damagedHolderWait)
	stateDeadline := time.Now().Add(faultStateWait)
	waiting, read := false, false
	// A member's entry outlives its process: after a crash (a killed ddpm local, a lost node) the
	// state still lists it, with what it held, until the leader drops it. A holder counts only once
	// a heartbeat of its own is applied after the first state read here (its LastHeartbeat moves
	// on, or it joined since), so two trainers whose files were both damaged do not each move
	// theirs aside for the other's stale entry and then wait for ever on each other's empty volume.
	heard := map[string]int64{}
	for {
		callDeadline := stateDeadline
		if read {
			callDeadline = deadline
		}
		sctx, cancel := context.WithTimeout(ctx, max(time.Until(callDeadline), time.Second))
		st, serr := caughtUpState(sctx, cli)
		cancel()
		if serr == nil {
			if !read {
				for id, m := range st.Members {
					heard[id] = m.LastHeartbeat
				}
			}
			read = true
			if st.Status == fsm.StatusSucceeded {
				// Nothing is left to train: no holder is awaited (the run's trainers are members
				// no more), and the file is the user's to restore or move.
				return nil, refuse(fmt.Sprintf("the run has succeeded (step %d), so nothing is left to train and the run needs no file of this trainer; "+
					"restore it from a copy, or move it aside (ddpm checkpoint fetch copies the final checkpoint from a trainer that holds it; ddpm status lists them)", st.Step))
			}
			ck := st.LatestCheckpoint()
			if ck == nil {
				return nil, refuse(fmt.Sprintf("the coordinators list no committed checkpoint of the run, so this file may hold its only copy; "+
					"restore it from a copy, or move it aside and %s (it then joins with an empty volume)", trainer.RestartAdvice))
			}
			var others, members []string
			for _, h := range ck.Holders {
				if h != o.id {
					others = append(others, h)
					if holdsNow(st, h, ck) && heardSince(st, h, heard) {
						members = append(members, h)
					}
				}
			}
			if len(others) == 0 {
				return nil, refuse(fmt.Sprintf("no other trainer holds the run's newest committed checkpoint (step %d), so this file may be its only copy; "+
					"restore it from a copy, or move it aside, %s and roll it back (ddpm checkpoint rollback) to a step another trainer holds or to step 0",
					ck.Step, trainer.RestartAdvice))
			}
			if len(members) > 0 {
				aside, err := moveAside(path)
				if err != nil {
					return nil, withExit(1, fmt.Errorf("%v; moving it aside: %w", damage, err))
				}
				log.Warn(MsgDamagedMovedAside, "file", path, "moved_to", aside, "err", damage.Error(), "step", ck.Step, "sha256", ck.SHA256, "holders", members)
				store, err := checkpoint.Open(path, checkpoint.Options{})
				if err != nil {
					return nil, withExit(1, err)
				}
				return store, nil
			}
			if time.Now().After(deadline) {
				return nil, refuse(fmt.Sprintf("the run's newest committed checkpoint (step %d) was held by %s, none of whom is a member holding it now with a live process (waited %v); "+
					"start a trainer that holds it, then %s", ck.Step, strings.Join(others, ", "), damagedHolderWait, trainer.RestartAdvice))
			}
			if !waiting {
				waiting = true
				log.Info(MsgDamagedWaitsHolder, "file", path, "step", ck.Step, "holders", others, "wait", damagedHolderWait.String())
			}
		} else if time.Now().After(callDeadline) {
			log.Error("the volume's checkpoint file is damaged and the coordinators' state is unreadable: it was left as it is", "file", path, "err", serr.Error())
			// Not openErr's way on ("move it aside"): whether the file may be the run's only copy
			// is exactly what is unknown; a start once the coordinators answer decides it.
			msg := fmt.Sprintf("%v; it was left as it is: the coordinators (%s) did not answer within %v, so whether another trainer holds the run's newest committed checkpoint is not known; "+
				"%s once they answer (it moves the file aside itself when one does)", damage, o.coordinator, faultStateWait, trainer.RestartAdvice)
			return nil, withExit(1, &advisedError{err: openErr, msg: restartAdvice(msg, o.dataDir)})
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// heardSince reports whether member id of st has shown a live process since the state in which
// recoverDamagedVolume first saw it (before: each member's LastHeartbeat then, in unix
// nanoseconds of the leader's clock): a heartbeat or progress report applied since, or a join
// (it was no member then). A member entry left by a killed process shows neither.
func heardSince(st *fsm.State, id string, before map[string]int64) bool {
	m := st.Members[id]
	if m == nil {
		return false
	}
	t0, seen := before[id]
	return !seen || m.LastHeartbeat > t0
}

// holdsNow reports whether the state st says that trainer id, a member now, holds checkpoint ck on
// its volume: among the checkpoints it offered at its latest join or committed as a rank since
// (fsm.Member.Held), or the start checkpoint of the generation it trains in, which it loaded and
// trained past (the state machine's own rule for adding a holder). ck.Holders alone does not
// say so: it keeps every trainer that ever held ck, also one that has rejoined since with an
// empty volume (a lost volume, or a damaged file moved aside).
func holdsNow(st *fsm.State, id string, ck *fsm.Checkpoint) bool {
	m := st.Members[id]
	if m == nil {
		return false
	}
	if slices.ContainsFunc(m.Held, func(h fsm.Held) bool { return h.Step == ck.Step && h.SHA256 == ck.SHA256 }) {
		return true
	}
	g := st.Generation
	return g.Checkpoint != nil && g.Checkpoint.Step == ck.Step && g.Checkpoint.SHA256 == ck.SHA256 && g.Rank(id) >= 0 && m.Step > ck.Step
}

// caughtUpState returns the coordinators' state from a replica that has applied everything
// committed before the current leader's term: one whose state holds that leader's release record
// (fsm.State.Release, the first entry of each leader's term) of the term the replica is in. A
// replica restarted a moment ago answers with its snapshot before it has replayed its log, and
// one without a leader may lag: their state could lack committed checkpoints. Either is an
// error, and so is a call that fails.
func caughtUpState(ctx context.Context, cli *coordinator.Client) (*fsm.State, error) {
	resp, err := cli.Status(ctx)
	if err != nil {
		return nil, err
	}
	st, err := fsm.Decode(resp.StateJson)
	if err != nil {
		return nil, err
	}
	if resp.LeaderId == "" || st.Release == nil || st.Release.Term != resp.RaftTerm {
		return nil, fmt.Errorf("replica %s has not applied its leader's log yet (term %d)", resp.ReplicaId, resp.RaftTerm)
	}
	return st, nil
}

// pollCaughtUp reads the coordinators' state until a replica answers with one that has caught up
// with its leader's log (caughtUpState), every 200 ms until ctx ends; then it returns the last
// error.
func pollCaughtUp(ctx context.Context, cli *coordinator.Client) (*fsm.State, error) {
	for {
		st, err := caughtUpState(ctx, cli)
		if err == nil {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// moveAside renames the file at path to path.damaged-UTCTIME (UTC, to the second:
// checkpoints.db.damaged-20261201T022500Z), with -2, -3, ... added when a file of that name is
// there: it never replaces a file (atomicfile.MoveNoReplace, which also syncs the folder so that
// the move survives a crash). It returns the new path.
func moveAside(path string) (string, error) {
	stamp := path + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	for i := 1; ; i++ {
		dst := stamp
		if i > 1 {
			dst = fmt.Sprintf("%s-%d", stamp, i)
		}
		err := atomicfile.MoveNoReplace(path, dst)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		return dst, nil
	}
}

// removeUnusedFile removes the checkpoint file at path, which this process created and holds open
// as store, when it holds no checkpoint: a cluster trainer that ends before the coordinators
// accepted it (a wrong --coordinator, refused run flags, stopped while joining) leaves no file
// behind in --data-dir. It is removed while store still holds the file's lock, so no other
// trainer has opened it meanwhile. A file that cannot be removed is one warning line.
func removeUnusedFile(store *checkpoint.Store, path string, log *slog.Logger) {
	if infos, err := store.List(); err != nil || len(infos) > 0 {
		return
	}
	if err := os.Remove(path); err != nil {
		log.Warn("could not remove the empty checkpoint file this trainer made before it was accepted", "file", path, "err", err)
	}
}

// missingDirs lists dir and those of its parents that do not exist (dir first): the folders
// os.MkdirAll(dir) makes.
func missingDirs(dir string) []string {
	var made []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); !errors.Is(err, fs.ErrNotExist) {
			return made
		}
		made = append(made, d)
		if filepath.Dir(d) == d {
			return made
		}
	}
}

// removeEmptyDirs removes the folders dirs (missingDirs: innermost first) while each is empty.
func removeEmptyDirs(dirs []string) {
	for _, d := range dirs {
		if os.Remove(d) != nil {
			return
		}
	}
}

// trainerEnvFlags are the flags `ddpm trainer` also takes from the environment, as DDPM_<FLAG>
// (flagsFromEnvOnly), when the command line leaves them unset: DDPM_HTTP_TLS, as a coordinator
// reads it.
var trainerEnvFlags = []string{"http-tls"}

// flagsFromEnvOnly sets the flags names of fs that the command line left unset from DDPM_<NAME>
// (flagsFromEnv, the coordinators' reading: the same names, values and refusals); the other
// flags of fs are not read from the environment.
func flagsFromEnvOnly(fs *pflag.FlagSet, names ...string) error {
	only := pflag.NewFlagSet(fs.Name(), pflag.ContinueOnError)
	for _, n := range names {
		only.AddFlag(fs.Lookup(n))
	}
	return flagsFromEnv(only)
}

// dataExit gives a dataset that cannot be read (trainer.ErrData: a corrupted prepared shard,
// an image changed on disk, data of another fingerprint than the run's checkpoints) the status of
// refused input, 2: no restart fixes it, and `ddpm local` stops the run on it rather than
// restarting the trainer; so does a generation that starts at step 0 from --init weights that
// are gone (trainer.ErrInitGone). A cluster trainer has left the cluster by then: its data is its own
// failure, not the run's (trainer.FailsRun), and the others go on. Other errors, and an error
// that already carries an exit status, pass unchanged.
func dataExit(err error) error {
	var ee *exitError
	if (errors.Is(err, trainer.ErrData) || errors.Is(err, trainer.ErrInitGone)) && !errors.As(err, &ee) {
		return withExit(2, err)
	}
	return err
}

// checkListen checks a trainer's --listen address, which is also the address its ring peers
// dial: it must name a port and a host they can reach, not only a port or a wildcard IP.
func checkListen(addr string) error {
	// Port 0 (any free port) is a number, but the peers and the coordinators are told this
	// address: it must name the port they will find the trainer at.
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		return errors.New("give a fixed port in 1..65535 (the ring peers and the coordinators reach the trainer there)")
	}
	if err := checkHostPort(addr); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if host == "" {
		return errors.New("the ring peers dial this address: give a host they can reach (this machine's IP or name), not only a port")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("the ring peers dial this address: give an address of this machine they can reach, not %s", host)
	}
	return nil
}
