package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"ddpm/allreduce"
	"ddpm/checkpoint"
	"ddpm/internal/metrics"
)

// Assignment is what the coordinator tells one trainer for one generation (DESIGN.md section 5).
type Assignment struct {
	Generation uint64
	Rank       int
	World      int
	// Peers are the ring's members in ring order (their all-reduce/gRPC addresses);
	// Peers[Rank] is this trainer.
	Peers []string
	// StartStep is where the generation begins: the newest committed checkpoint's step, or 0.
	StartStep int64
	// CheckpointSHA is that checkpoint's sha256 (hex), "" when StartStep is 0.
	CheckpointSHA string
	// Holders are the gRPC addresses of trainers that hold the checkpoint.
	Holders []string
}

// Coordinator is the trainer's view of the cluster's source of truth. The gRPC client of
// coordinator/ implements it for real clusters; Solo for a world of one without a coordinator.
type Coordinator interface {
	// Assignments delivers this trainer's assignments, newest last; each one supersedes the
	// ones before. The channel closes when ctx ends or the coordinator gives up on us.
	Assignments(ctx context.Context) (<-chan Assignment, error)
	// Report sends one step's progress without holding up the step (a cluster trainer queues
	// it: ReportQueue).
	Report(ctx context.Context, p Progress)
	// CheckpointReady tells the coordinator this rank of generation gen stored checkpoint step
	// with sha256 sha and size bytes of arenas. One that queues reports delivers those of the
	// steps up to step first: the run resumes from its newest committed checkpoint, never
	// before it, so a report lost after the commit would leave its step without a loss point.
	CheckpointReady(ctx context.Context, gen uint64, step int64, sha string, size int64) error
	// WaitCommitted blocks until checkpoint step is committed (every rank reported the same
	// sha256) and returns its sha256, or returns an error (ctx ended, ranks diverged, run failed).
	WaitCommitted(ctx context.Context, step int64) (string, error)
}

// RingFunc builds the all-reduce ring of an assignment; the returned close function releases
// it. A world of one needs no ring (Solo).
type RingFunc func(ctx context.Context, a Assignment) (Reducer, func(), error)

// FetchFunc copies checkpoint step from one of holders into the local store, verifying its sha256.
type FetchFunc func(ctx context.Context, holders []string, step int64, sha string, dst *checkpoint.Store) error

// Node runs a Trainer as one member of a cluster: it follows the coordinator's assignments,
// loads the assigned checkpoint, builds the ring, steps, and takes part in the coordinated
// checkpoints (DESIGN.md sections 5 and 6).
type Node struct {
	Trainer     *Trainer
	Store       *checkpoint.Store
	Coord       Coordinator
	Ring        RingFunc
	Fetch       FetchFunc
	Fingerprint string // the dataset's, recorded in every checkpoint
	Log         *slog.Logger
	// Metrics, if not nil, observes every step (Prometheus, served on the trainer's /metrics).
	Metrics *metrics.Trainer
}

// Run follows assignments until the run's last step is committed (nil), stop is closed (nil,
// after finishing the step in flight, or at once while a checkpoint loads or when the step's
// ring breaks as its peers stop too; nothing partial is written), ctx ends (ctx.Err()), the
// assignment stream ends (ErrAssignmentsClosed), or this trainer cannot go on: the run's
// failure (FailsRun: ErrDiverged, ErrMismatch) or its own (ErrVolume, ErrData).
func (n *Node) Run(ctx context.Context, stop <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	asg, err := n.Coord.Assignments(ctx)
	if err != nil {
		return err
	}
	// The watcher keeps the newest assignment and aborts the generation in flight when a new
	// one arrives: the all-reduce returns at once and the step is dropped.
	var (
		mu        sync.Mutex
		pending   *Assignment
		cancelGen context.CancelFunc = func() {}
		wake                         = make(chan struct{}, 1)
		closed                       = make(chan struct{})
	)
	var running *Assignment // the generation being trained (mu); nil: none
	go func() {
		defer close(closed)
		// The stream's end (the coordinator gave up on us, the run ended without us) also ends
		// the generation in flight: a step or a wait for a commit would otherwise wait for an
		// assignment that never comes.
		defer func() { mu.Lock(); cancelGen(); mu.Unlock() }()
		for a := range asg {
			mu.Lock()
			// The coordinator re-sends an assignment when anything in it changes (a commit,
			// the run's status); only a new generation (or a first one) supersedes the one
			// in flight. A generation is its number and its ring: a coordinator cluster rebuilt
			// without its old state numbers generations from 1 again, and a reused number with
			// another ring or start is a new generation.
			if running != nil && sameGeneration(a, *running) {
				mu.Unlock()
				continue
			}
			pending = &a
			cancelGen()
			mu.Unlock()
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	// newGen starts a generation's context; the watcher cancels it (mu held).
	newGen := func() context.Context {
		g, c := context.WithCancel(ctx)
		cancelGen = c
		return g
	}
	defer func() { mu.Lock(); cancelGen(); mu.Unlock() }()
	run := n.Trainer.run
	for {
		// Wait for an assignment we have not acted on.
		var a Assignment
		var genCtx context.Context
		for {
			mu.Lock()
			if pending != nil {
				a, pending = *pending, nil
				cur := a
				running = &cur
				genCtx = newGen()
				mu.Unlock()
				break
			}
			mu.Unlock()
			select {
			case <-wake:
			case <-closed:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return ErrAssignmentsClosed
			case <-stop:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		n.Log.Info("assignment", "generation", a.Generation, "rank", a.Rank, "world", a.World, "start_step", a.StartStep, "peers", a.Peers)
		// A stop ends the load at once (a fetch waiting for a holder that stops too would
		// retry until the trainer is killed): no step is in flight yet.
		loadCtx, loadDone := UntilStop(genCtx, stop)
		err := n.load(loadCtx, a)
		loadDone()
		if err != nil {
			if genCtx.Err() != nil && ctx.Err() == nil {
				continue // superseded while loading
			}
			if loadCtx.Err() != nil && ctx.Err() == nil && stopping(stop) {
				n.Log.Info("stopped while loading the checkpoint", "step", a.StartStep, "err", err)
				return nil
			}
			if errors.Is(err, errFetch) {
				// No holder could serve it now; the coordinator will re-ring without us or
				// with a holder that can.
				n.Log.Warn("checkpoint not loaded; waiting for the next generation", "step", a.StartStep, "err", err)
				continue
			}
			return err
		}
		red, release, err := n.Ring(genCtx, a)
		if err != nil {
			if genCtx.Err() != nil && ctx.Err() == nil {
				continue
			}
			n.Log.Warn("ring not built; waiting for the next generation", "generation", a.Generation, "err", err)
			continue
		}
		n.Trainer.SetRing(red, a.Rank, a.World, a.Generation)
		done, err := n.steps(genCtx, stop, a)
		release()
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case FailsRun(err) || errors.Is(err, ErrVolume) || errors.Is(err, ErrData):
			// No new generation would get past these: the same data, the same volume.
			return err
		case err != nil && stopping(stop):
			// Stopped while the peers stop too (ddpm local stops every trainer at once): the
			// step in flight lost its ring. Nothing was written of it; an expected end.
			n.Log.Info("generation ended while stopping", "generation", a.Generation, "step", n.Trainer.StepCount(), "err", err)
			return nil
		case err != nil:
			// A peer left or a new generation aborted the step: the coordinator will assign
			// the next generation (from the last committed checkpoint). A generation superseded
			// by a newer one (a trainer joining or leaving, as at every start and stop: the
			// ring's stale generation, or the newer assignment ending a checkpoint's wait) is
			// routine: not a warning.
			level := slog.LevelWarn
			if errors.Is(err, allreduce.ErrStaleGeneration) || genCtx.Err() != nil {
				level = slog.LevelInfo
			}
			n.Log.Log(ctx, level, "generation ended", "generation", a.Generation, "step", n.Trainer.StepCount(), "err", err)
			continue
		case done == stopped:
			return nil
		}
		// The last step ran: its checkpoint must be committed before we leave, since only
		// committed checkpoints are restart points.
		if _, err := n.Coord.WaitCommitted(genCtx, run.Steps); err != nil {
			if genCtx.Err() != nil && ctx.Err() == nil {
				continue // a new generation came first; it starts from what is committed
			}
			return err
		}
		_ = n.Store.MarkCommitted(run.Steps)
		n.Log.Info(MsgRunComplete, "step", run.Steps)
		return nil
	}
}

// UntilStop returns a context that ends with ctx, when stop is closed (a trainer's first SIGTERM),
// or when the returned cancel function is called, whichever comes first: the wait it bounds (a
// checkpoint fetch, a join the coordinators do not answer) ends at the stop instead of running
// on until a second signal. Call cancel when the wait is over: it ends the goroutine that
// watches stop.
func UntilStop(ctx context.Context, stop <-chan struct{}) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-stop:
			cancel()
		case <-c.Done():
		}
	}()
	return c, cancel
}

// stopping reports whether stop is closed.
func stopping(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// sameGeneration reports whether a and b describe one generation: the same number, ring,
// rank and start (holders may differ: a re-sent assignment carries the latest ones).
func sameGeneration(a, b Assignment) bool {
	return a.Generation == b.Generation && a.Rank == b.Rank && a.World == b.World &&
		a.StartStep == b.StartStep && a.CheckpointSHA == b.CheckpointSHA && slices.Equal(a.Peers, b.Peers)
}

// MsgRunComplete is the log message of a trainer whose run is complete (it then exits with
// status 0); `ddpm local` reads it to tell a finished trainer from one stopped from outside.
const MsgRunComplete = "run complete"

type outcome int

const (
	finished outcome = iota
	stopped
)

// errFetch: no holder served the assigned checkpoint in time; the node waits for the next
// generation (it is never returned by Run).
var errFetch = errors.New("trainer: checkpoint fetch")

// FailsRun reports whether err, returned by Node.Run, is a failure every rank of the run meets
// alike, so that the run itself cannot go on: ErrDiverged (the ranks share one all-reduced
// gradient, so every rank sees the same non-finite steps) and ErrMismatch (the checkpoint the
// cluster committed, verified against its committed sha256, belongs to another model preset or
// run config than the one every member joined with). A cluster trainer reports such an error
// to the coordinators, which fail the run.
//
// Every other error is this trainer's own: it ends this trainer only, which leaves the cluster
// so that the others go on in a new generation without it, and may come back (a restart) once
// the cause is gone. So are ErrVolume (its checkpoint file, its disk; a fetch, a network, a
// commit this rank disagrees with) and ErrData. The run pins its data: by the fingerprint its
// run config may name (checked before the trainer joins), by the one recorded in every
// committed checkpoint (checked at every load), and, for a prepared copy, by the shard sha256s
// of the index.json that records that fingerprint (checked as the shards are first read; every
// other format's records were all read when the data was opened). A trainer whose data fails
// one of these checks, or a later read, holds another copy than the one the run trains on, and
// the other trainers' copies may well be intact: one node's bad disk, or a node given other
// data, must not fail the run. A
// single trainer cannot tell that every copy is bad (one file on storage they all share): then
// every trainer that reads it leaves in turn, each with the line naming the file, and the run
// waits, not failed, for its data to be fixed. A standalone trainer (no cluster) ends on either
// kind alike.
func FailsRun(err error) bool {
	return errors.Is(err, ErrDiverged) || errors.Is(err, ErrMismatch)
}

// steps runs steps of generation a until the run's last step, stop, or an error.
func (n *Node) steps(ctx context.Context, stop <-chan struct{}, a Assignment) (outcome, error) {
	tr := n.Trainer
	K := tr.run.CheckpointEvery
	for tr.StepCount() < tr.run.Steps {
		select {
		case <-stop:
			return stopped, nil
		case <-ctx.Done():
			// Superseded: a ring's all-reduce notices within the step, a world of one
			// (whose reduction is local) here, between steps.
			return finished, ctx.Err()
		default:
		}
		p, err := tr.Step(ctx)
		if err != nil {
			return finished, err
		}
		p.Log(n.Log)
		if n.Metrics != nil {
			n.Metrics.Observe(p.Sample(tr.run.GlobalBatch))
		}
		n.Coord.Report(ctx, p)
		s := tr.StepCount()
		if s%K == 0 || s == tr.run.Steps {
			if err := n.checkpoint(ctx, a.Generation); err != nil {
				return finished, err
			}
		}
	}
	return finished, nil
}

// checkpoint saves the replica as checkpoint StepCount(), tells the coordinator its sha256, and
// folds in what the coordinator committed since the last one (mark, prune).
func (n *Node) checkpoint(ctx context.Context, gen uint64) error {
	tr := n.Trainer
	s := tr.StepCount()
	t0 := time.Now()
	ck := tr.Snapshot(gen, n.Fingerprint)
	sha, err := n.Store.Save(ck)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrVolume, err)
	}
	took := time.Since(t0).Seconds()
	n.Log.Info("checkpoint saved", "step", s, "sha256", sha, "seconds", took)
	if n.Metrics != nil {
		n.Metrics.ObserveCheckpoint(s, took)
	}
	if err := n.Coord.CheckpointReady(ctx, gen, s, sha, 4*int64(len(ck.Params)+len(ck.EMA)+len(ck.AdamM)+len(ck.AdamV))); err != nil {
		return err
	}
	// Every rank reports within moments of the others (they are in lockstep through the
	// all-reduce), so the commit follows at once. Waiting for it keeps the local commit mark
	// (which peers fetching this checkpoint rely on) and retention in step with the cluster.
	committed, err := n.Coord.WaitCommitted(ctx, s)
	if err != nil {
		return err
	}
	if committed != sha {
		// Another generation's copy of the step was committed (the generation is hashed):
		// ours is no restart point, and the next generation starts from the committed one.
		return fmt.Errorf("trainer: checkpoint step %d: this rank's copy hashes to %.12s, the cluster committed %.12s", s, sha, committed)
	}
	if err := n.Store.MarkCommitted(s); err != nil {
		return fmt.Errorf("%w: %w", ErrVolume, err)
	}
	if _, err := n.Store.Prune(tr.run.KeepCheckpoints, 0); errors.Is(err, checkpoint.ErrStorage) {
		// A damaged file (a panic of bbolt's before) or a failing disk: writing on would
		// spread the damage, and the file keeps growing without a prune.
		return fmt.Errorf("%w: %w", ErrVolume, err)
	} else if err != nil {
		n.Log.Warn("prune failed", "err", err)
	}
	return nil
}

// uncommitAbandoned removes the local commit mark of checkpoints the cluster no longer has
// committed: those after a's start step, and one at it with another sha256 than the one a names.
// The cluster's newest committed checkpoint is where every generation starts, and the
// committed checkpoints only grow, so a start before a local committed one means an operator
// rolled the run back past it (ddpm checkpoint rollback). Left committed, it would refuse the
// recomputed checkpoint of its step (checkpoint.ErrConflict: the trainer would exit), be
// offered as held at the next join, and be taken by sample and export as the run's newest.
// The data stays until the recomputed one replaces it or Prune drops it. Only a checkpoint
// written by an older generation than a's is touched: a rollback's generation is newer than
// every checkpoint it abandons, while a stale assignment (a lagging replica's older generation,
// re-sent after a failover) or a cluster rebuilt without its state (numbering generations from
// 1 again) is not, and must not cost the volume a checkpoint the cluster did commit.
func (n *Node) uncommitAbandoned(a Assignment) error {
	infos, err := n.Store.List()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrVolume, err)
	}
	var dropped []int64
	for _, in := range infos {
		if !in.Committed || in.Generation >= a.Generation || in.Step < a.StartStep ||
			(in.Step == a.StartStep && (a.CheckpointSHA == "" || in.SHA256 == a.CheckpointSHA)) {
			continue
		}
		if err := n.Store.Uncommit(in.Step); err != nil {
			return fmt.Errorf("%w: %w", ErrVolume, err)
		}
		dropped = append(dropped, in.Step)
	}
	if len(dropped) > 0 {
		n.Log.Warn("checkpoints abandoned by the cluster uncommitted (the run was rolled back)", "steps", dropped, "start_step", a.StartStep)
	}
	return nil
}

// AbandonedCheckpoint names a checkpoint the cluster committed and a rollback then abandoned
// (ddpm checkpoint rollback): its step and sha256 (hex), as the coordinator lists them.
type AbandonedCheckpoint struct {
	Step   int64
	SHA256 string
}

// MsgUncommittedAbandoned is the log message of UncommitAbandoned, one line per step.
const MsgUncommittedAbandoned = "checkpoint abandoned by a rollback uncommitted on this volume"

// UncommitAbandoned removes the commit mark of every checkpoint of store that abandoned names
// with the same sha256 (the header's), logging one line per step it uncommits, and returns those
// steps, ascending. A trainer calls it with the coordinator's list at every join and assignment,
// a standby's too: a trainer that was away during the rollback, or is not put in a ring after
// it, would otherwise keep the abandoned checkpoints marked committed, and sample, eval and
// export of its volume (and run-folder resolution, which takes the trainer with the newest
// committed checkpoint) would take an abandoned model for the run's. A checkpoint of the same
// step with another sha256 (the recomputed one) is left alone. The data stays until a
// recomputed checkpoint replaces it or Prune drops it. Errors: the store's, wrapped.
func UncommitAbandoned(store *checkpoint.Store, abandoned []AbandonedCheckpoint, log *slog.Logger) ([]int64, error) {
	if len(abandoned) == 0 {
		return nil, nil
	}
	return uncommitWhere(store, "abandoned", log, func(in checkpoint.Info) string {
		if !slices.Contains(abandoned, AbandonedCheckpoint{Step: in.Step, SHA256: in.SHA256}) {
			return ""
		}
		return fmt.Sprintf("the run was rolled back past step %d; this volume's copy is no restart point and not the run's model", in.Step)
	})
}

// uncommitWhere removes the commit mark of every intact committed checkpoint of store for which
// why returns a reason (not ""), logging one MsgUncommittedAbandoned line per step with it, and
// returns those steps, ascending. Each mark is checked against the listed sha256 in the same
// transaction that removes it (UncommitIf): a recomputed checkpoint of the step committed since
// the listing keeps its mark. what names the kind in errors. Errors: the store's, wrapped.
func uncommitWhere(store *checkpoint.Store, what string, log *slog.Logger, why func(checkpoint.Info) string) ([]int64, error) {
	infos, err := store.List()
	if err != nil {
		return nil, fmt.Errorf("trainer: uncommit %s checkpoints: %w", what, err)
	}
	var done []int64
	for _, in := range infos {
		if !in.Committed || in.Err != nil {
			continue
		}
		reason := why(in)
		if reason == "" {
			continue
		}
		removed, err := store.UncommitIf(in.Step, in.SHA256)
		if err != nil {
			return done, fmt.Errorf("trainer: uncommit %s checkpoint %d: %w", what, in.Step, err)
		}
		if removed {
			done = append(done, in.Step)
			log.Warn(MsgUncommittedAbandoned, "step", in.Step, "sha256", in.SHA256, "why", reason)
		}
	}
	return done, nil
}

// StepRange is the steps (Above, UpTo].
type StepRange struct {
	Above, UpTo int64
}

// CommittedCheckpoint names a checkpoint the cluster committed: its step and sha256 (hex).
type CommittedCheckpoint struct {
	Step   int64
	SHA256 string
}

// ForgottenAbandoned is what the coordinators' state says of the abandoned checkpoints whose
// sha256s it no longer lists (fsm.State.AbandonedRanges): those that fell off the bounded list
// of abandoned ones after many rollbacks, and those a rollback to a step older than every
// listed checkpoint gave up after keep_checkpoints had pruned them.
type ForgottenAbandoned struct {
	// Ranges are those steps, as disjoint ranges (Above, UpTo]; Above is a step a rollback went
	// back to, and a copy at it is no part of the range.
	Ranges []StepRange
	// Line are the checkpoints the line in force committed, the ones the cluster lists
	// (fsm.State.Checkpoints) and those at forgotten steps it pruned since
	// (fsm.State.Recommitted): a volume's copy with one of these steps and sha256s is the run's own.
	Line []CommittedCheckpoint
	// Generation is the generation of the state this was read from. A rollback starts a
	// newer generation than every checkpoint it abandons, and every commit of an older
	// generation is in the state: only copies written by an older generation are judged.
	Generation uint64
}

// UncommitForgotten removes the commit mark of every checkpoint of store in f's forgotten
// ranges that is not one of f.Line, written by a generation older than f.Generation, logging one
// MsgUncommittedAbandoned line per step, and returns those steps, ascending. It is
// UncommitAbandoned for the abandoned checkpoints the coordinators can name only by step: the
// cluster never adopts such a copy nor takes it back by a rollback (it cannot be told from an
// abandoned one), so a volume that kept it committed would offer sample, eval and export an
// abandoned model for the run's newest. A copy at a range's own Above (a rollback's restart
// point) is left alone. The data stays until a recomputed checkpoint replaces it or Prune drops
// it. Errors: the store's, wrapped.
func UncommitForgotten(store *checkpoint.Store, f ForgottenAbandoned, log *slog.Logger) ([]int64, error) {
	if len(f.Ranges) == 0 {
		return nil, nil
	}
	return uncommitWhere(store, "forgotten abandoned", log, func(in checkpoint.Info) string {
		if in.Generation >= f.Generation || slices.Contains(f.Line, CommittedCheckpoint{Step: in.Step, SHA256: in.SHA256}) {
			return ""
		}
		i := slices.IndexFunc(f.Ranges, func(r StepRange) bool { return in.Step > r.Above && in.Step <= r.UpTo })
		if i < 0 {
			return ""
		}
		r := f.Ranges[i]
		return fmt.Sprintf("the run was rolled back to step %d past steps %d..%d, whose abandoned checkpoints the cluster no longer lists; this volume's copy is no restart point and not the run's model",
			r.Above, r.Above+1, r.UpTo)
	})
}

// load brings the replica to a's start step: the seed's initialization (or the --init weights;
// ErrInitGone when they could not be read: DeferInit) for step 0, else the committed checkpoint from our own store or, if we lack it, from a peer that holds it.
func (n *Node) load(ctx context.Context, a Assignment) error {
	tr := n.Trainer
	if err := n.uncommitAbandoned(a); err != nil {
		return err
	}
	if a.StartStep == 0 {
		if tr.initErr != nil {
			return fmt.Errorf("%w: %w", ErrInitGone, tr.initErr)
		}
		tr.Reset()
		return nil
	}
	c, err := n.Store.Get(a.StartStep)
	if err == nil && a.CheckpointSHA != "" && c.SHA256 != a.CheckpointSHA {
		err = fmt.Errorf("%w: local copy of step %d hashes to %.12s, the committed one to %.12s", checkpoint.ErrCorruptCheckpoint, a.StartStep, c.SHA256, a.CheckpointSHA)
	}
	if err != nil {
		if n.Fetch == nil || len(a.Holders) == 0 {
			return fmt.Errorf("%w: checkpoint step %d: %w", ErrVolume, a.StartStep, err)
		}
		n.Log.Info("fetching checkpoint", "step", a.StartStep, "from", a.Holders)
		// A holder marks its copy committed when it hears of the commit, which can be a
		// moment after we do: retry until it serves, or a new generation supersedes this one.
		for try := 0; ; try++ {
			err := n.Fetch(ctx, a.Holders, a.StartStep, a.CheckpointSHA, n.Store)
			if err == nil {
				break
			}
			if errors.Is(err, checkpoint.ErrStorage) {
				// The copy arrived and this volume cannot store it (full, failing, damaged):
				// no holder helps; the cluster goes on without this trainer.
				return fmt.Errorf("%w: %w", ErrVolume, err)
			}
			if try%20 == 19 {
				n.Log.Warn("checkpoint fetch still failing", "step", a.StartStep, "err", err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %w", errFetch, err)
			case <-time.After(250 * time.Millisecond):
			}
		}
		if c, err = n.Store.Get(a.StartStep); err != nil {
			return fmt.Errorf("%w: %w", ErrVolume, err)
		}
		// The holder served what it holds as committed; the assignment names the sha256 the
		// cluster committed. Checked as the local copy was.
		if a.CheckpointSHA != "" && c.SHA256 != a.CheckpointSHA {
			return fmt.Errorf("%w: fetched copy of step %d hashes to %.12s, the committed one to %.12s", errFetch, a.StartStep, c.SHA256, a.CheckpointSHA)
		}
	}
	// A run's dataset is fixed by the checkpoints it wrote, pinned in the config or not: data
	// swapped under a resumed run (another prepared folder at the same path) is refused.
	if n.Fingerprint != "" && c.DatasetFingerprint != "" && c.DatasetFingerprint != n.Fingerprint {
		return &fingerprintError{step: c.Step, sha: c.SHA256, want: c.DatasetFingerprint, have: n.Fingerprint}
	}
	if err := tr.Restore(c); err != nil {
		return err
	}
	_ = n.Store.MarkCommitted(a.StartStep)
	return nil
}
