// Package chaos proves the cluster's fault tolerance (issue 12): it runs a whole cluster as real
// processes of the ddpm binary (raft coordinators and trainers, as `ddpm local` does), injects
// failures on a schedule (SIGKILL of a trainer, of the raft leader, of a trainer in the middle of
// a coordinated checkpoint, SIGSTOP past the heartbeat timeout, a corrupted checkpoint on a
// trainer's volume, a trainer's network link cut), and measures each detection and recovery.
//
// After a run, Check asserts what users rely on: every trainer finished, every committed
// checkpoint on every volume verifies (checkpoint.Open + Verify), and the final state (the
// parameter, EMA and Adam arenas) is bitwise equal to that of an uninterrupted run with the same
// config. The last holds because every generation of a chaos run has the same world size (the
// run pins min_trainers to the number of trainers): the trajectory then depends only on the seed
// (DESIGN.md section 3), and a restart from a committed checkpoint replays the same steps.
//
// An elastic run (Config.Elastic) goes on without a trainer that is down, so it can finish
// before that trainer is back; Consistent then accepts an older committed checkpoint on that
// trainer's volume, provided the trainer said so when it exited (End).
package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// Errors returned by Run and Check, wrapped with details.
var (
	// ErrIncomplete: the run did not finish (a trainer failed, or the deadline passed).
	ErrIncomplete = errors.New("chaos: run did not complete")
	// ErrNotInjected: a fault of the schedule never fired (the run ended first, or its target
	// could not be found).
	ErrNotInjected = errors.New("chaos: fault not injected")
	// ErrNoRecovery: training did not move past the step of a fault within the deadline.
	ErrNoRecovery = errors.New("chaos: no recovery")
	// ErrBadCheckpoint: a committed checkpoint on some volume does not verify.
	ErrBadCheckpoint = errors.New("chaos: committed checkpoint does not verify")
	// ErrDiffers: the final state is not bitwise equal to the reference, or ranks disagree.
	ErrDiffers = errors.New("chaos: final state differs")
	// ErrTooManyRedone: a failure cost more steps than the checkpoint interval.
	ErrTooManyRedone = errors.New("chaos: more steps redone than the checkpoint interval")
)

// RecoveryTimeout bounds the wait for training to move past a fault's step after its target is
// restored: far above any recovery seen (a few heartbeat timeouts), far below a test's deadline.
const RecoveryTimeout = 90 * time.Second

// Kind names a failure.
type Kind string

// The failures a schedule can inject.
const (
	// KillTrainer SIGKILLs a trainer and starts it again after Fault.Down.
	KillTrainer Kind = "kill-trainer"
	// KillLeader SIGKILLs the raft leader and starts it again after Fault.Down.
	KillLeader Kind = "kill-leader"
	// KillInCheckpoint SIGKILLs a trainer the moment it reports a checkpoint step (while it
	// snapshots and writes the checkpoint) and starts it again after Fault.Down.
	KillInCheckpoint Kind = "kill-in-checkpoint"
	// StopTrainer SIGSTOPs a trainer for Fault.Down (longer than the heartbeat timeout), then
	// SIGCONTs it.
	StopTrainer Kind = "stop-trainer"
	// LinkDown sets a trainer's network link down for Fault.Down (Config.Netns only).
	LinkDown Kind = "link-down"
)

// Fault is one failure of a schedule.
type Fault struct {
	Kind Kind
	// AtStep: the fault fires once some rank has completed this step (KillInCheckpoint: at the
	// first checkpoint step >= AtStep of its target).
	AtStep int64
	// Trainer is the target's index (ignored by KillLeader).
	Trainer int
	// Down is how long the target stays dead, stopped or cut off.
	Down time.Duration
	// Corrupt (KillTrainer, KillInCheckpoint): damage the newest committed checkpoint on the
	// target's volume (one flipped bit in its parameter arena) before it starts again.
	Corrupt bool
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s at step %d", f.Kind, f.AtStep)
	if f.Kind != KillLeader {
		s += fmt.Sprintf(" trainer-%d", f.Trainer)
	}
	s += fmt.Sprintf(" down %s", f.Down)
	if f.Corrupt {
		s += " +corrupt"
	}
	return s
}

// Config describes one chaos run.
type Config struct {
	// Bin is the ddpm executable.
	Bin string
	// Dir is the run directory to create (it must not exist or be empty): run.yaml,
	// coordinator-I/, trainer-I/, logs/.
	Dir string
	// Run is the run config; MaxTrainers is set to Trainers, and MinTrainers too unless
	// Elastic.
	Run          config.Run
	Trainers     int
	Coordinators int
	// Elastic lets generations start with a single trainer (min_trainers 1): training resumes
	// without a dead trainer instead of waiting for it. World sizes then change during the run,
	// so the final state equals the reference only up to float summation order (Check does not
	// apply; ranks still agree bitwise with each other).
	Elastic bool
	// Netns puts each trainer in a network namespace of its own behind a veth pair on a bridge,
	// so ring traffic crosses real interfaces (root only; see netns.go).
	Netns bool
	// Deadline bounds the whole run (default 10 minutes).
	Deadline time.Duration
	// Logf receives the harness's timeline (nil: none).
	Logf func(format string, args ...any)
}

// Recovery is what one fault cost.
type Recovery struct {
	Fault  Fault
	Target string    // process name, e.g. "trainer-1" or "coordinator-2"
	At     time.Time // when the fault fired
	// Note says what the fault hit (e.g. whether a checkpoint was being written).
	Note string
	// StepAtFault is the highest step any rank had completed when the fault fired.
	StepAtFault int64
	// GenerationAtFault is the highest generation seen in a step report then.
	GenerationAtFault uint64
	// Detected: from the fault to the coordinator's first event about the target (removed
	// after missed heartbeats, or rejoined); -1 when there was none.
	Detected time.Duration
	// NewLeader (KillLeader): from the kill to another replica reporting itself leader.
	NewLeader time.Duration
	// Restored: from the fault to the target's restart / SIGCONT / link up.
	Restored time.Duration
	// Resumed: from the fault to the first step of a later generation (or, when no new
	// generation followed, the first step reported after the fault); -1 when never.
	Resumed time.Duration
	// ResumedFrom is the start step of the generation that resumed training.
	ResumedFrom int64
	// Redone is StepAtFault - ResumedFrom when a new generation followed, else 0.
	Redone int64
	// Corrupted is the step of the checkpoint Fault.Corrupt damaged on the target's volume, -1
	// when none. The target must uncommit it when it starts again (Run checks its log line).
	Corrupted int64
}

// Digest identifies a final state: sha256 of each arena's little-endian float32 bytes, of the
// RNG state, and the counters. (The checkpoint's own sha256 also covers the generation that
// wrote it, which differs between runs with different failures, so it is kept apart.)
type Digest struct {
	Step                      int64
	Params, EMA, AdamM, AdamV [32]byte
	RNG                       [32]byte
	OptStep                   int64
	Cursor                    uint64
	// SHA256 is the checkpoint's canonical sha256 (not compared across runs).
	SHA256 string
}

// same reports whether d and e hold the same training state.
func (d Digest) same(e Digest) bool {
	d.SHA256, e.SHA256 = "", ""
	return d == e
}

// End is what a trainer said last when it exited with its run complete: its last "run complete"
// line (trainer.MsgRunComplete).
type End struct {
	// Said: the trainer wrote such a line.
	Said bool
	// Step is the run's final step as the line gives it.
	Step int64
	// VolumeStep is the newest committed checkpoint on the trainer's volume, as the line of a
	// trainer that had no part in the run's end gives it (volume_step); -1 on the line of a
	// trainer that finished the run itself, which has none.
	VolumeStep int64
	// FinalOn names the trainers the line says hold the final checkpoint (final_on).
	FinalOn []string
	// Note is the line's sentence for people (note), "" when it has none.
	Note string
}

// Report is the outcome of Run.
type Report struct {
	Recoveries []Recovery
	// Final is each trainer's newest committed checkpoint, in trainer order (Step -1 for a
	// volume that could not be read).
	Final []Digest
	// Ends is what each trainer said when it finished, in trainer order.
	Ends []End
	// Committed is every checkpoint the coordinators committed during the run, in commit
	// order (CommittedOf): the list the volumes were verified against.
	Committed []Commit
	// Elastic: the run let generations shrink (Config.Elastic); see Consistent.
	Elastic bool
	// Verified counts committed checkpoints that verified, over all volumes.
	Verified int
	// Events is the coordinators' replicated timeline at the end of the run.
	Events  []fsm.Event
	Elapsed time.Duration
}

// Run starts the cluster, injects schedule in order, waits for the run to finish, and verifies
// every volume. It returns the report even when it also returns an error.
func Run(ctx context.Context, cfg Config, schedule []Fault) (*Report, error) {
	c, err := start(cfg)
	if err != nil {
		return nil, err
	}
	defer c.close()
	rep := &Report{Elastic: cfg.Elastic}
	t0 := time.Now()
	deadline := cfg.Deadline
	if deadline == 0 {
		deadline = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()

	var errs []error
	for _, f := range schedule {
		r, err := c.inject(ctx, f)
		rep.Recoveries = append(rep.Recoveries, r)
		if err != nil {
			errs = append(errs, err)
			break // the cluster is stuck or gone: stop it and report what is on disk
		}
	}
	wctx := ctx
	if len(errs) > 0 {
		var wcancel context.CancelFunc
		wctx, wcancel = context.WithTimeout(ctx, 0)
		defer wcancel()
	}
	for i := range cfg.Trainers {
		name := trainerName(i)
		if err := c.wait(wctx, name); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %v (see %s)", ErrIncomplete, name, err, c.logPath(name)))
		}
	}
	var committed []Commit
	if st, err := c.state(); err == nil {
		rep.Events = st.Events
		committed = CommittedOf(st)
		for i := range rep.Recoveries {
			c.detection(&rep.Recoveries[i], st.Events)
		}
	} else {
		errs = append(errs, fmt.Errorf("chaos: reading the coordinators' state: %w", err))
	}
	c.stop()
	rep.Committed = committed
	c.mu.Lock()
	for i := range cfg.Trainers {
		e, ok := c.ends[trainerName(i)]
		if !ok {
			e = End{VolumeStep: -1}
		}
		rep.Ends = append(rep.Ends, e)
	}
	c.mu.Unlock()
	rep.Elapsed = time.Since(t0)
	rep.Final, rep.Verified, err = verifyVolumes(cfg.Dir, cfg.Trainers, committed)
	if err != nil {
		errs = append(errs, err)
	}
	c.mu.Lock()
	for _, r := range rep.Recoveries {
		if r.Corrupted >= 0 && !slices.Contains(c.damaged[r.Target], r.Corrupted) {
			errs = append(errs, fmt.Errorf("%w: %s: %s did not uncommit the damaged checkpoint %d when it started again (it said %v)",
				ErrBadCheckpoint, r.Fault, r.Target, r.Corrupted, c.damaged[r.Target]))
		}
	}
	c.mu.Unlock()
	for _, r := range rep.Recoveries {
		if r.Redone > cfg.Run.CheckpointEvery {
			errs = append(errs, fmt.Errorf("%w: %s redid %d steps (every %d)", ErrTooManyRedone, r.Fault, r.Redone, cfg.Run.CheckpointEvery))
		}
	}
	return rep, errors.Join(errs...)
}

// Check compares a chaos run's final states with the reference run's: every trainer must end
// at the last step with a state bitwise equal to the reference's.
func Check(ref, got *Report, steps int64) error {
	if len(ref.Final) == 0 {
		return fmt.Errorf("%w: the reference run has no final checkpoint", ErrDiffers)
	}
	want := ref.Final[0]
	if want.Step != steps {
		return fmt.Errorf("%w: the reference run ends at step %d, want %d", ErrDiffers, want.Step, steps)
	}
	var errs []error
	for i, d := range got.Final {
		if !d.same(want) {
			errs = append(errs, fmt.Errorf("%w: trainer-%d ends at step %d %.12s (params %x), reference step %d %.12s (params %x)",
				ErrDiffers, i, d.Step, d.SHA256, d.Params[:6], want.Step, want.SHA256, want.Params[:6]))
		}
	}
	return errors.Join(errs...)
}

// Commit is one checkpoint the coordinators committed.
type Commit struct {
	Step int64
	// SHA256 is the checkpoint's sha256 (hex) in full while the coordinators' state still
	// lists it (the newest keep_checkpoints), else the first 12 hex digits, as their timeline
	// recorded the commit.
	SHA256 string
}

// Is reports whether the checkpoint of step with sha256 sha (in full) is c.
func (c Commit) Is(step int64, sha string) bool {
	return c.Step == step && len(c.SHA256) >= 12 && strings.HasPrefix(sha, c.SHA256)
}

// commitEvent matches the timeline's record of a commit: "checkpoint at step N committed
// (SHA12, ...)" or "checkpoint at step N adopted from trainer X's volume (SHA12): ...".
var commitEvent = regexp.MustCompile(`^checkpoint at step (\d+) (?:committed|adopted from .*) \(([0-9a-f]{12})`)

// CommittedOf lists every checkpoint the coordinators committed, in commit order, from their
// state st: the state keeps the newest keep_checkpoints in full (fsm.State.Checkpoints), its
// timeline (fsm.State.Events, up to fsm.MaxEvents) records every commit with the first 12 hex
// digits of its sha256. A step committed again (by a later generation, with other bytes) appears
// once per commit.
func CommittedOf(st *fsm.State) []Commit {
	var out []Commit
	for _, e := range st.Events {
		m := commitEvent.FindStringSubmatch(e.Text)
		if e.Kind != "checkpoint" || m == nil {
			continue
		}
		step, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, Commit{Step: step, SHA256: m[2]})
	}
	for _, ck := range st.Checkpoints {
		i := slices.IndexFunc(out, func(c Commit) bool { return c.Is(ck.Step, ck.SHA256) })
		if i < 0 { // its event fell off the timeline
			out = append(out, Commit{Step: ck.Step, SHA256: ck.SHA256})
			continue
		}
		out[i].SHA256 = ck.SHA256
	}
	return out
}

// committedAs looks step up in commits: whether any commit has that step, whether one of them
// is sha, and the sha256s they recorded.
func committedAs(commits []Commit, step int64, sha string) (known, is bool, recorded []string) {
	for _, c := range commits {
		if c.Step == step {
			known = true
			is = is || c.Is(step, sha)
			recorded = append(recorded, fmt.Sprintf("%.12s", c.SHA256))
		}
	}
	return known, is, recorded
}

// Consistent checks a run of steps steps on its own, against the coordinators' committed
// checkpoints (got.Committed).
//
// A run that is not elastic must end with every trainer at the last step, in the same state,
// and that checkpoint's sha256 the one the coordinators committed (when got.Committed lists
// any).
//
// An elastic run can finish without a trainer that is stopped or cut off near its end, and that
// trainer then exits at its last step (see cmd/ddpm logFinishedWithout). So an elastic run must
// end with: the coordinators' newest committed checkpoint at the last step; at least one trainer
// volume holding it; every volume at the last step holding exactly the committed bytes (its
// sha256) and the same state; and every volume that ended earlier holding a checkpoint the
// coordinators committed (same step, same sha256), its trainer having said when it exited that
// the run finished without it at the last step while its volume held that step (got.Ends).
// Behind words each such trainer in one line, for the test's log.
func Consistent(got *Report, steps int64) (behind []string, err error) {
	if len(got.Final) == 0 {
		return nil, fmt.Errorf("%w: no final checkpoint", ErrDiffers)
	}
	var errs []error
	if !got.Elastic {
		for i, d := range got.Final {
			if d.Step != steps || !d.same(got.Final[0]) {
				errs = append(errs, fmt.Errorf("%w: trainer-%d ends at step %d %.12s, trainer-0 at step %d %.12s (want step %d)",
					ErrDiffers, i, d.Step, d.SHA256, got.Final[0].Step, got.Final[0].SHA256, steps))
			}
		}
		if known, is, rec := committedAs(got.Committed, steps, got.Final[0].SHA256); known && !is {
			errs = append(errs, fmt.Errorf("%w: the final checkpoint hashes to %.12s, the coordinators committed %s", ErrDiffers, got.Final[0].SHA256, strings.Join(rec, ", ")))
		}
		return nil, errors.Join(errs...)
	}

	newest := int64(-1)
	finalSHA := ""
	for _, c := range got.Committed {
		newest = max(newest, c.Step)
		if c.Step == steps {
			finalSHA = c.SHA256
		}
	}
	if finalSHA == "" || newest != steps {
		return nil, fmt.Errorf("%w: the coordinators' newest committed checkpoint is step %d, want the last step %d", ErrDiffers, newest, steps)
	}
	var first *Digest // the first volume at the last step
	var atLast []string
	for i, d := range got.Final {
		if d.Step == steps {
			atLast = append(atLast, trainerName(i))
		}
	}
	slices.Sort(atLast)
	for i, d := range got.Final {
		switch {
		case d.Step == steps:
			if !(Commit{steps, finalSHA}).Is(d.Step, d.SHA256) {
				errs = append(errs, fmt.Errorf("%w: trainer-%d holds step %d with sha256 %.12s, the coordinators committed %.12s", ErrDiffers, i, d.Step, d.SHA256, finalSHA))
			} else if first != nil && !d.same(*first) {
				errs = append(errs, fmt.Errorf("%w: trainer-%d and an earlier trainer hold step %d in different states", ErrDiffers, i, d.Step))
			}
			if first == nil {
				first = &got.Final[i]
			}
		case d.Step >= 0 && d.Step < steps:
			known, is, rec := committedAs(got.Committed, d.Step, d.SHA256)
			if !known {
				errs = append(errs, fmt.Errorf("%w: trainer-%d ends at step %d, which the coordinators never committed", ErrDiffers, i, d.Step))
				continue
			}
			if !is {
				errs = append(errs, fmt.Errorf("%w: trainer-%d holds step %d with sha256 %.12s, the coordinators committed %s", ErrDiffers, i, d.Step, d.SHA256, strings.Join(rec, ", ")))
				continue
			}
			var e End
			if i < len(got.Ends) {
				e = got.Ends[i]
			}
			if !e.Said || e.Step != steps || e.VolumeStep != d.Step {
				errs = append(errs, fmt.Errorf("%w: trainer-%d ends at step %d of %d but did not say that the run finished without it (its last run-complete line: %+v)",
					ErrDiffers, i, d.Step, steps, e))
				continue
			}
			if on := slices.Sorted(slices.Values(e.FinalOn)); !slices.Equal(on, atLast) {
				errs = append(errs, fmt.Errorf("%w: trainer-%d says the final checkpoint is on %v, the volumes at step %d are %v", ErrDiffers, i, on, steps, atLast))
				continue
			}
			behind = append(behind, fmt.Sprintf("trainer-%d ended at committed step %d (sha256 %.12s) and said: %s", i, d.Step, d.SHA256, e.Note))
		case d.Step < 0:
			errs = append(errs, fmt.Errorf("%w: trainer-%d's volume has no readable committed checkpoint", ErrDiffers, i))
		default:
			errs = append(errs, fmt.Errorf("%w: trainer-%d ends at step %d of a %d-step run", ErrDiffers, i, d.Step, steps))
		}
	}
	if first == nil {
		errs = append(errs, fmt.Errorf("%w: no trainer volume holds the last step %d (the coordinators committed it as %.12s)", ErrDiffers, steps, finalSHA))
	}
	return behind, errors.Join(errs...)
}

func trainerName(i int) string     { return "trainer-" + strconv.Itoa(i) }
func coordinatorName(i int) string { return "coordinator-" + strconv.Itoa(i) }

// cluster is a running chaos cluster.
type cluster struct {
	cfg   Config
	csup  *localrun.Supervisor // coordinators
	tsup  *localrun.Supervisor // trainers (under `ip netns exec` with Config.Netns)
	specs map[string]localrun.Spec
	http  []string // coordinators' HTTP addresses
	net   *netns
	logf  func(string, ...any)
	t0    time.Time

	mu    sync.Mutex
	obs   []stepObs
	saved map[string][]int64 // trainer -> steps of "checkpoint saved" lines, in order
	ends  map[string]End     // trainer -> its last "run complete" line
	// damaged: trainer -> steps of its "damaged checkpoint uncommitted" lines
	damaged map[string][]int64
	arm     *armed // KillInCheckpoint waiting for its moment
	wake    chan struct{}
}

type stepObs struct {
	at      time.Time
	trainer string
	step    int64
	gen     uint64
	world   int
}

// armed is a KillInCheckpoint trigger: the line callback fires it in the same goroutine that
// reads the target's output, so the kill lands while the target snapshots and saves.
type armed struct {
	target string
	from   int64
	every  int64
	fired  chan int64 // the step at which it fired
}

func start(cfg Config) (*cluster, error) {
	if cfg.Trainers < 1 || cfg.Coordinators < 1 {
		panic("chaos: Config needs at least one trainer and one coordinator")
	}
	run := cfg.Run
	run.MinTrainers, run.MaxTrainers = cfg.Trainers, cfg.Trainers
	if cfg.Elastic {
		run.MinTrainers = 1
	}
	if err := run.Validate(); err != nil {
		return nil, err
	}
	cfg.Run = run
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("chaos: %s is not empty", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(cfg.Dir, localrun.ConfigFile)
	if err := os.WriteFile(cfgPath, run.Marshal(), 0o644); err != nil {
		return nil, err
	}
	logs := filepath.Join(cfg.Dir, localrun.LogsDir)
	csup, err := localrun.New(cfg.Bin, logs)
	if err != nil {
		return nil, err
	}
	tsup := csup
	if cfg.Netns {
		ip, err := exec.LookPath("ip")
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrNoNetns, err)
		}
		if tsup, err = localrun.New(ip, logs); err != nil {
			return nil, err
		}
	}
	c := &cluster{cfg: cfg, csup: csup, tsup: tsup, specs: map[string]localrun.Spec{}, saved: map[string][]int64{}, ends: map[string]End{}, damaged: map[string][]int64{},
		wake: make(chan struct{}, 1), t0: time.Now(), logf: cfg.Logf}
	if c.logf == nil {
		c.logf = func(string, ...any) {}
	}
	csup.Line, tsup.Line = c.line, c.line

	ports, err := localrun.FreePorts(3*cfg.Coordinators + 2*cfg.Trainers)
	if err != nil {
		return nil, err
	}
	coordHost, trainerHost := "127.0.0.1", func(int) string { return "127.0.0.1" }
	if cfg.Netns {
		if c.net, err = newNetns(cfg.Trainers); err != nil {
			return nil, err
		}
		coordHost, trainerHost = c.net.hostAddr, c.net.trainerAddr
	}
	hp := func(h string, p int) string { return h + ":" + strconv.Itoa(p) }
	var peers, grpcAddrs []string
	for i := range cfg.Coordinators {
		p := ports[3*i:]
		peers = append(peers, fmt.Sprintf("c%d=%s=%s", i, hp("127.0.0.1", p[0]), hp(coordHost, p[1])))
		grpcAddrs = append(grpcAddrs, hp(coordHost, p[1]))
		c.http = append(c.http, hp("127.0.0.1", p[2]))
	}
	for i := range cfg.Coordinators {
		p := ports[3*i:]
		c.specs[coordinatorName(i)] = localrun.Spec{Name: coordinatorName(i), Args: []string{"coordinator", "--id", "c" + strconv.Itoa(i),
			"--raft-addr", hp("127.0.0.1", p[0]), "--grpc-addr", hp(coordHost, p[1]), "--http-addr", c.http[i],
			"--peers", strings.Join(peers, ","), "--data-dir", localrun.CoordinatorDir(cfg.Dir, i),
			"--bootstrap", "--config", cfgPath, "--insecure"}}
	}
	for i := range cfg.Trainers {
		p := ports[3*cfg.Coordinators+2*i:]
		args := []string{"trainer", "--id", trainerName(i), "--coordinator", strings.Join(grpcAddrs, ","),
			"--listen", hp(trainerHost(i), p[0]), "--http-addr", hp(trainerHost(i), p[1]),
			"--data-dir", localrun.TrainerDir(cfg.Dir, i), "--config", cfgPath, "--insecure"}
		sp := localrun.Spec{Name: trainerName(i), Args: args}
		if c.net != nil {
			sp.Args = append([]string{"netns", "exec", c.net.ns(i), cfg.Bin}, args...)
		}
		c.specs[trainerName(i)] = sp
	}
	for i := range cfg.Coordinators {
		if err := c.launch(coordinatorName(i)); err != nil {
			c.close()
			return nil, err
		}
	}
	for i := range cfg.Trainers {
		if err := c.launch(trainerName(i)); err != nil {
			c.close()
			return nil, err
		}
	}
	c.logf("cluster up: %d coordinators, %d trainers%s, %d steps, checkpoint every %d, heartbeat timeout %s",
		cfg.Coordinators, cfg.Trainers, map[bool]string{true: " (each in its own network namespace)"}[cfg.Netns],
		run.Steps, run.CheckpointEvery, run.HeartbeatTimeout)
	return c, nil
}

// supOf returns the supervisor of a process name.
func (c *cluster) supOf(name string) *localrun.Supervisor {
	if strings.HasPrefix(name, "trainer-") {
		return c.tsup
	}
	return c.csup
}

// launch starts (or restarts) a named process. Trainers in namespaces run under `ip netns exec`,
// which execs the binary in place, so the pid is the trainer's.
func (c *cluster) launch(name string) error { return c.supOf(name).Start(c.specs[name]) }

func (c *cluster) logPath(name string) string {
	return filepath.Join(c.cfg.Dir, localrun.LogsDir, name+".log")
}

// line reads every child's output: trainers' step lines, "checkpoint saved", "run complete" and
// "damaged checkpoint uncommitted" lines.
func (c *cluster) line(name string, line []byte) {
	if p, ok := trainer.ParseProgress(line); ok {
		c.mu.Lock()
		c.obs = append(c.obs, stepObs{at: time.Now(), trainer: name, step: p.Step, gen: p.Generation, world: p.World})
		a := c.arm
		if a != nil && a.target == name && p.Step >= a.from && p.Step%a.every == 0 {
			c.arm = nil
			_ = c.signal(name, syscall.SIGKILL)
			a.fired <- p.Step
		}
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
		return
	}
	if strings.HasPrefix(name, "trainer-") && strings.Contains(string(line), `"msg":"`+trainer.MsgRunComplete+`"`) {
		if e, ok := parseEnd(line); ok {
			c.mu.Lock()
			c.ends[name] = e
			c.mu.Unlock()
		}
		return
	}
	saved := strings.Contains(string(line), `"msg":"checkpoint saved"`)
	if !saved && !strings.Contains(string(line), `"msg":"`+trainer.MsgUncommittedDamaged+`"`) {
		return
	}
	var m struct {
		Step int64 `json:"step"`
	}
	if json.Unmarshal(line, &m) == nil {
		c.mu.Lock()
		if saved {
			c.saved[name] = append(c.saved[name], m.Step)
		} else {
			c.damaged[name] = append(c.damaged[name], m.Step)
		}
		c.mu.Unlock()
	}
}

// parseEnd reads a trainer's "run complete" JSON line.
func parseEnd(line []byte) (End, bool) {
	var m struct {
		Msg        string   `json:"msg"`
		Step       int64    `json:"step"`
		VolumeStep *int64   `json:"volume_step"`
		FinalOn    []string `json:"final_on"`
		Note       string   `json:"note"`
	}
	if json.Unmarshal(line, &m) != nil || m.Msg != trainer.MsgRunComplete {
		return End{}, false
	}
	e := End{Said: true, Step: m.Step, VolumeStep: -1, FinalOn: m.FinalOn, Note: m.Note}
	if m.VolumeStep != nil {
		e.VolumeStep = *m.VolumeStep
	}
	return e, true
}

func (c *cluster) signal(name string, sig syscall.Signal) error {
	return c.supOf(name).Signal(name, sig)
}

func (c *cluster) wait(ctx context.Context, name string) error { return c.supOf(name).Wait(ctx, name) }

// high returns the highest step and generation reported so far.
func (c *cluster) high() (step int64, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, o := range c.obs {
		step, gen = max(step, o.step), max(gen, o.gen)
	}
	return
}

// waitFor blocks until cond holds over the observations, or ctx ends.
func (c *cluster) waitFor(ctx context.Context, cond func(obs []stepObs) bool) error {
	for {
		c.mu.Lock()
		ok := cond(c.obs)
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// inject fires f, restores its target after f.Down, and waits until training has moved past the
// step at which f fired.
func (c *cluster) inject(ctx context.Context, f Fault) (Recovery, error) {
	r := Recovery{Fault: f, Detected: -1, Resumed: -1, NewLeader: -1, Corrupted: -1}
	steps := c.cfg.Run.Steps
	if err := c.waitFor(ctx, func(obs []stepObs) bool {
		for _, o := range obs {
			if o.step >= f.AtStep {
				return true
			}
		}
		return false
	}); err != nil {
		return r, fmt.Errorf("%w: %s: step %d never reached", ErrNotInjected, f, f.AtStep)
	}
	if hi, _ := c.high(); hi >= steps {
		return r, fmt.Errorf("%w: %s: the run already finished", ErrNotInjected, f)
	}
	var at time.Time
	switch f.Kind {
	case KillTrainer, StopTrainer, LinkDown:
		r.Target = trainerName(f.Trainer)
		r.StepAtFault, r.GenerationAtFault = c.high()
		at = time.Now()
		var err error
		switch f.Kind {
		case KillTrainer:
			err = c.signal(r.Target, syscall.SIGKILL)
		case StopTrainer:
			err = c.signal(r.Target, syscall.SIGSTOP)
		case LinkDown:
			if c.net == nil {
				return r, fmt.Errorf("%w: %s needs Config.Netns", ErrNotInjected, f)
			}
			err = c.net.link(f.Trainer, false)
		}
		if err != nil {
			return r, fmt.Errorf("%w: %s: %v", ErrNotInjected, f, err)
		}
	case KillInCheckpoint:
		r.Target = trainerName(f.Trainer)
		a := &armed{target: r.Target, from: max(f.AtStep, 1), every: c.cfg.Run.CheckpointEvery, fired: make(chan int64, 1)}
		c.mu.Lock()
		c.arm = a
		c.mu.Unlock()
		select {
		case s := <-a.fired:
			at = time.Now()
			r.StepAtFault, r.GenerationAtFault = c.high()
			r.StepAtFault = max(r.StepAtFault, s)
		case <-ctx.Done():
			return r, fmt.Errorf("%w: %s: no checkpoint step reached", ErrNotInjected, f)
		}
	case KillLeader:
		leader, _, err := c.leader(ctx, "")
		if err != nil {
			return r, fmt.Errorf("%w: %s: %v", ErrNotInjected, f, err)
		}
		r.Target = coordinatorName(leader)
		r.StepAtFault, r.GenerationAtFault = c.high()
		at = time.Now()
		if err := c.signal(r.Target, syscall.SIGKILL); err != nil {
			return r, fmt.Errorf("%w: %s: %v", ErrNotInjected, f, err)
		}
		if _, _, err := c.leader(ctx, r.Target); err == nil {
			r.NewLeader = time.Since(at)
		}
	default:
		panic("chaos: unknown fault kind " + string(f.Kind))
	}
	r.At = at
	c.logf("%7.2fs  inject %s -> %s at step %d (generation %d)", time.Since(c.t0).Seconds(), f, r.Target, r.StepAtFault, r.GenerationAtFault)
	if r.NewLeader >= 0 {
		c.logf("%7.2fs  new leader after %s", time.Since(c.t0).Seconds(), r.NewLeader.Round(time.Millisecond))
	}

	// Restore the target after f.Down.
	switch f.Kind {
	case KillTrainer, KillInCheckpoint, KillLeader:
		_ = c.wait(ctx, r.Target)
		if f.Kind == KillInCheckpoint {
			c.mu.Lock()
			saved := slices.Contains(c.saved[r.Target], r.StepAtFault)
			c.mu.Unlock()
			r.Note = fmt.Sprintf("killed while writing checkpoint %d", r.StepAtFault)
			if saved {
				r.Note = fmt.Sprintf("killed after saving checkpoint %d, before its commit", r.StepAtFault)
			}
		}
		sleep(ctx, f.Down-time.Since(at))
		if f.Corrupt {
			step, off, err := CorruptNewestCommitted(filepath.Join(localrun.TrainerDir(c.cfg.Dir, f.Trainer), trainer.CheckpointFile))
			switch {
			case errors.Is(err, ErrNothingCommitted):
				r.Note = strings.TrimPrefix(r.Note+"; nothing committed yet to corrupt", "; ")
			case err != nil:
				return r, fmt.Errorf("%w: %s: corrupting: %v", ErrNotInjected, f, err)
			default:
				r.Note = strings.TrimPrefix(r.Note+fmt.Sprintf("; corrupted checkpoint %d (bit flipped at byte %d)", step, off), "; ")
				r.Corrupted = step
				c.logf("%7.2fs  corrupted %s's checkpoint %d at byte %d", time.Since(c.t0).Seconds(), r.Target, step, off)
			}
		}
		if err := c.launch(r.Target); err != nil {
			return r, err
		}
	case StopTrainer:
		sleep(ctx, f.Down-time.Since(at))
		_ = c.signal(r.Target, syscall.SIGCONT)
	case LinkDown:
		sleep(ctx, f.Down-time.Since(at))
		_ = c.net.link(f.Trainer, true)
	}
	r.Restored = time.Since(at)
	c.logf("%7.2fs  restored %s after %s", time.Since(c.t0).Seconds(), r.Target, r.Restored.Round(time.Millisecond))

	// Recovery: a step past the fault's step. Resumed is the first step of a newer generation,
	// or for a fault that caused none, the first step after it.
	rctx, rcancel := context.WithTimeout(ctx, RecoveryTimeout)
	defer rcancel()
	// A trainer's failure always ends its generation (expired, or rejoined as a new process),
	// so its recovery is a step of a later generation past the fault's step. (A step line seen
	// just after the fault may belong to the old generation: a SIGSTOPped rank's peers can
	// complete the all-reduce it had finished.) A leader's death ends no generation.
	newGen := f.Kind != KillLeader
	err := c.waitFor(rctx, func(obs []stepObs) bool {
		for _, o := range obs {
			if o.at.After(at) && (!newGen || o.gen > r.GenerationAtFault) && (o.step > r.StepAtFault || o.step == steps) {
				return true
			}
		}
		return false
	})
	c.mu.Lock()
	var first *stepObs
	for i := range c.obs {
		o := &c.obs[i]
		if o.at.After(at) && o.gen > r.GenerationAtFault && (first == nil || o.at.Before(first.at)) {
			first = o
		}
	}
	if first != nil {
		r.Resumed, r.ResumedFrom = first.at.Sub(at), first.step-1
		// The resumed generation's start step is the lowest step it reported, minus one.
		for _, o := range c.obs {
			if o.gen == first.gen {
				r.ResumedFrom = min(r.ResumedFrom, o.step-1)
			}
		}
		r.Redone = max(r.StepAtFault-r.ResumedFrom, 0)
	} else if !newGen {
		for _, o := range c.obs {
			if o.at.After(at) {
				r.Resumed, r.ResumedFrom = o.at.Sub(at), r.StepAtFault
				break
			}
		}
	}
	c.mu.Unlock()
	if err != nil {
		return r, fmt.Errorf("%w: %s: no step past %d within the deadline", ErrNoRecovery, f, r.StepAtFault)
	}
	c.logf("%7.2fs  resumed %s after the fault, from step %d (%d steps redone)", time.Since(c.t0).Seconds(), r.Resumed.Round(time.Millisecond), r.ResumedFrom, r.Redone)
	return r, nil
}

// detection fills r.Detected from the coordinators' timeline: the first event about the target
// (or a new generation) after the fault.
func (c *cluster) detection(r *Recovery, events []fsm.Event) {
	if r.Fault.Kind == KillLeader || r.Target == "" {
		return
	}
	at := r.At
	for _, e := range events {
		if e.Time <= at.UnixNano() {
			continue
		}
		if (e.Kind == "leave" || e.Kind == "join" || e.Kind == "generation") && strings.Contains(e.Text, r.Target) {
			r.Detected = time.Duration(e.Time - at.UnixNano())
			return
		}
	}
}

// status is the part of a coordinator's /api/status the harness reads.
type status struct {
	Replica string     `json:"replica"`
	Role    string     `json:"role"`
	Leader  string     `json:"leader"`
	Term    uint64     `json:"term"`
	State   *fsm.State `json:"state"`
}

func (c *cluster) status(i int) (*status, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	res, err := cl.Get("http://" + c.http[i] + "/api/status")
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var s status
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		return nil, err
	}
	return &s, nil
}

// leader polls the coordinators until one other than exclude reports itself leader.
func (c *cluster) leader(ctx context.Context, exclude string) (int, uint64, error) {
	for {
		for i := range c.http {
			if coordinatorName(i) == exclude {
				continue
			}
			if s, err := c.status(i); err == nil && s.Role == "leader" {
				return i, s.Term, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, 0, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// state reads the replicated state from any live coordinator.
func (c *cluster) state() (*fsm.State, error) {
	var errs []error
	for i := range c.http {
		s, err := c.status(i)
		if err == nil && s.State != nil {
			return s.State, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// stop ends every process, trainers (normally exited by now) before coordinators.
func (c *cluster) stop() {
	var ts, cs []string
	for n := range c.specs {
		if strings.HasPrefix(n, "trainer-") {
			ts = append(ts, n)
		} else {
			cs = append(cs, n)
		}
	}
	slices.Sort(ts)
	slices.Sort(cs)
	c.tsup.StopAll(5*time.Second, ts...)
	c.csup.StopAll(5*time.Second, cs...)
}

func (c *cluster) close() {
	c.stop()
	c.tsup.Close(5 * time.Second)
	c.csup.Close(5 * time.Second)
	if c.net != nil {
		c.net.close()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// verifyVolumes verifies every committed checkpoint on every trainer's volume, checks that each
// one at a step the coordinators committed is one of their commits (same sha256), and returns
// each trainer's newest committed state.
func verifyVolumes(dir string, trainers int, committed []Commit) ([]Digest, int, error) {
	var (
		final    []Digest
		verified int
		errs     []error
	)
	for i := range trainers {
		path := filepath.Join(localrun.TrainerDir(dir, i), trainer.CheckpointFile)
		st, err := checkpoint.Open(path, checkpoint.Options{ReadOnly: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %v", ErrBadCheckpoint, path, err))
			final = append(final, Digest{Step: -1})
			continue
		}
		steps, err := st.Committed()
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %v", ErrBadCheckpoint, path, err))
		}
		infos, _ := st.List()
		for _, s := range steps {
			if err := st.Verify(s); err != nil {
				errs = append(errs, fmt.Errorf("%w: trainer-%d step %d: %v", ErrBadCheckpoint, i, s, err))
				continue
			}
			for _, in := range infos {
				if known, is, rec := committedAs(committed, s, in.SHA256); in.Step == s && known && !is {
					errs = append(errs, fmt.Errorf("%w: trainer-%d step %d has sha256 %.12s, the coordinators committed %s", ErrBadCheckpoint, i, s, in.SHA256, strings.Join(rec, ", ")))
				}
			}
			verified++
		}
		ck, err := st.LatestCommitted()
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: trainer-%d: %v", ErrBadCheckpoint, i, err))
			final = append(final, Digest{Step: -1})
		} else {
			final = append(final, digest(ck))
		}
		st.Close()
	}
	return final, verified, errors.Join(errs...)
}

func digest(c *checkpoint.Checkpoint) Digest {
	sum := func(a []float32) [32]byte {
		b := make([]byte, 4*len(a))
		for i, v := range a {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return sha256.Sum256(b)
	}
	return Digest{Step: c.Step, SHA256: c.SHA256, Params: sum(c.Params), EMA: sum(c.EMA),
		AdamM: sum(c.AdamM), AdamV: sum(c.AdamV), RNG: sha256.Sum256(c.RNG), OptStep: c.OptStep, Cursor: c.Cursor}
}

// RandomSchedule draws n faults for a run of run.Steps steps over trainers trainers: kinds
// uniformly from kinds, targets uniformly, AtStep spread over the run with at least two
// checkpoint intervals between faults, downtimes of 0.5-3 s (SIGSTOP and link cuts: 1.2-2.5
// heartbeat timeouts, so that the coordinator notices), and half the trainer kills with a
// corrupted checkpoint. The same seed gives the same schedule.
func RandomSchedule(seed uint64, run config.Run, trainers, n int, kinds []Kind) []Fault {
	if n < 1 || len(kinds) == 0 || trainers < 1 {
		panic("chaos: RandomSchedule needs n >= 1, some kinds and trainers >= 1")
	}
	r := rand.New(rand.NewPCG(seed, 0x6368616f73))
	gap := 2 * run.CheckpointEvery
	span := run.Steps - 3*run.CheckpointEvery - int64(n)*gap
	if span < 1 {
		panic(fmt.Sprintf("chaos: RandomSchedule: %d faults do not fit in %d steps (checkpoint every %d)", n, run.Steps, run.CheckpointEvery))
	}
	// n sorted offsets in [0, span), then spaced by gap.
	at := make([]int64, n)
	for i := range at {
		at[i] = r.Int64N(span)
	}
	slices.Sort(at)
	hb := run.HeartbeatTimeout.Std()
	out := make([]Fault, n)
	for i := range out {
		// From just past the first checkpoint on, so that corruption has something to hit.
		f := Fault{Kind: kinds[r.IntN(len(kinds))], AtStep: run.CheckpointEvery + 2 + at[i] + int64(i)*gap, Trainer: r.IntN(trainers)}
		switch f.Kind {
		case StopTrainer, LinkDown:
			f.Down = hb + hb/5 + time.Duration(r.Int64N(int64(hb*13/10)))
		default:
			f.Down = 500*time.Millisecond + time.Duration(r.Int64N(int64(2500*time.Millisecond)))
		}
		if f.Kind == KillTrainer || f.Kind == KillInCheckpoint {
			f.Corrupt = r.IntN(2) == 0
		}
		out[i] = f
	}
	return out
}
