package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"ddpm/allreduce"
	"ddpm/api"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/metrics"
	"ddpm/internal/version"
	"ddpm/trainer"
)

// clusterCoord adapts the coordinator's gRPC client to trainer.Coordinator.
type clusterCoord struct {
	cli  *coordinator.Client
	id   string
	addr string // --listen: the address this process joins from
	// nonce is this process's random token (coordinator.NewProcessNonce), sent with every
	// Join: a stale refusal naming another nonce means another process took the id.
	nonce   string
	store   *checkpoint.Store // the volume: abandoned checkpoints are uncommitted on it
	log     *slog.Logger
	reports *trainer.ReportQueue // progress not yet taken by the coordinators (reportLoop)
	// overflowSeen is reports.Overflowed() at the last checkpoint (CheckpointReady only).
	overflowSeen int64
	// abandonedSeen is the last abandoned list (as text) whose checkpoints, and those in the
	// steps it no longer names, were uncommitted without error on store: an assignment re-sent
	// with the same list is not checked again.
	abandonedSeen atomic.Pointer[string]
	// finished: the run succeeded while this trainer had no rank in it (it was stalled or cut
	// off at the end, or a standby); it leaves with status 0.
	finished atomic.Bool
	// inc is the incarnation this process's latest Join was admitted as; every member call
	// carries it.
	inc atomic.Uint64
	// replaced is set (once) when the cluster says the id now belongs to another process;
	// stopReplaced then ends the run without another call to the cluster.
	replaced     atomic.Pointer[coordinator.StaleIncarnationError]
	stopReplaced context.CancelFunc
	// closedBy is why the assignment stream ended for good (the run failed: its reason), set
	// before Assignments' channel closes; runClusterTrainer adds it to trainer.ErrAssignmentsClosed.
	closedBy atomic.Pointer[error]
	// waitLogged is 1 + the generation whose rankless assignment watch last logged (0: none).
	waitLogged atomic.Uint64
}

// defaultCertRefusalWait is --cert-refusal-wait's default: how long a joining trainer that
// hears nothing but certificate refusals (coordinator.Client.CertRefusedFor) keeps trying
// before it exits with status 2. Long enough for a coordinator restarted with renewed
// certificates to come back; short enough that a trainer of another cluster says so soon.
const defaultCertRefusalWait = 30 * time.Second

// exitReplaced is the exit status of a trainer process whose id was taken over by a newer
// process (after this one was dropped: stopped, stalled or cut off past the heartbeat timeout).
const exitReplaced = 3

// join joins as req (with this process's nonce), records the incarnation it was admitted as,
// and uncommits the checkpoints the cluster abandoned on this trainer's volume.
func (c *clusterCoord) join(ctx context.Context, req coordinator.JoinRequest) error {
	req.Nonce = c.nonce
	j, err := c.cli.Join(ctx, req)
	if err == nil {
		c.inc.Store(j.Incarnation)
		c.uncommitAbandoned(ctx, j.Abandoned, j.Generation)
	}
	return err
}

// uncommitAbandoned uncommits on the volume the checkpoints the cluster abandoned that it holds as
// committed: those of list (the coordinators' list of abandoned ones) with the same sha256
// (trainer.UncommitAbandoned), and those in the steps of abandoned checkpoints the list no
// longer names (trainer.UncommitForgotten, from the coordinators' state once it has reached
// generation gen, the join's or the assignment's), one log line per step. It runs at the first
// join and whenever the list changes (every rollback changes it); a store failure or an
// unreadable state is logged and tried again with the next join or assignment.
func (c *clusterCoord) uncommitAbandoned(ctx context.Context, list []fsm.Held, gen uint64) {
	if c.store == nil {
		return
	}
	key := fmt.Sprint(list)
	if p := c.abandonedSeen.Load(); p != nil && *p == key {
		return
	}
	ab := make([]trainer.AbandonedCheckpoint, len(list))
	for i, h := range list {
		ab[i] = trainer.AbandonedCheckpoint{Step: h.Step, SHA256: h.SHA256}
	}
	if _, err := trainer.UncommitAbandoned(c.store, ab, c.log); err != nil {
		c.log.Error("could not uncommit the checkpoints the cluster abandoned; sample and export of this volume may take one", "err", err)
		return
	}
	st, err := c.stateAt(ctx, gen)
	if err != nil {
		c.log.Warn("could not read the coordinators' state to uncommit the abandoned checkpoints they no longer list; tried again at the next assignment", "err", err)
		return
	}
	if _, err := trainer.UncommitForgotten(c.store, forgottenOf(st), c.log); err != nil {
		c.log.Error("could not uncommit the checkpoints the cluster abandoned; sample and export of this volume may take one", "err", err)
		return
	}
	c.abandonedSeen.Store(&key)
}

// stateWait bounds how long stateAt waits for a replica's state to reach a generation.
const stateWait = 5 * time.Second

// stateAt returns the coordinators' state once the replica answering has applied generation gen
// (the one answering Status may lag the one that answered a join or sent an assignment), trying
// for up to stateWait.
func (c *clusterCoord) stateAt(ctx context.Context, gen uint64) (*fsm.State, error) {
	ctx, cancel := context.WithTimeout(ctx, stateWait)
	defer cancel()
	for {
		st, err := c.cli.State(ctx)
		if err == nil && st.Generation.Number >= gen {
			return st, nil
		}
		if err == nil {
			err = fmt.Errorf("the coordinators' state is at generation %d, not yet at %d", st.Generation.Number, gen)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forgottenOf is what st says of the abandoned checkpoints it no longer lists
// (fsm.State.AbandonedRanges), for trainer.UncommitForgotten.
func forgottenOf(st *fsm.State) trainer.ForgottenAbandoned {
	f := trainer.ForgottenAbandoned{Generation: st.Generation.Number}
	for _, r := range st.AbandonedRanges {
		f.Ranges = append(f.Ranges, trainer.StepRange{Above: r.Above, UpTo: r.UpTo})
	}
	for _, ck := range st.Checkpoints {
		f.Line = append(f.Line, trainer.CommittedCheckpoint{Step: ck.Step, SHA256: ck.SHA256})
	}
	for _, h := range st.Recommitted {
		f.Line = append(f.Line, trainer.CommittedCheckpoint{Step: h.Step, SHA256: h.SHA256})
	}
	return f
}

// noteReplaced reports whether err is the cluster saying that this trainer's id now belongs to
// another process (a stale incarnation whose current one joined with another process nonce; from
// a coordinator or a process older than nonces, from another address); the first time, it
// records that and ends the run. A stale incarnation with this process's own nonce is its own
// rejoin overtaking a call: not a replacement. The address alone cannot tell: a newer process
// behind the same stable name (a StatefulSet pod) joins from the same address.
func (c *clusterCoord) noteReplaced(err error) bool {
	var se *coordinator.StaleIncarnationError
	if !errors.As(err, &se) {
		return false
	}
	if se.Nonce != "" && se.Nonce == c.nonce || se.Nonce == "" && se.Address == c.addr {
		return false
	}
	if c.replaced.CompareAndSwap(nil, se) && c.stopReplaced != nil {
		c.stopReplaced()
	}
	return true
}

// replacedErr is the one line a replaced trainer exits with (status exitReplaced), or nil.
func (c *clusterCoord) replacedErr() error {
	se := c.replaced.Load()
	if se == nil {
		return nil
	}
	return withExit(exitReplaced, fmt.Errorf("trainer %s: replaced by a newer process at %s (incarnation %d); exiting", c.id, se.Address, se.Current))
}

// errRunFailed ends the assignment watch of a trainer whose run the coordinators failed; the
// trainer's last line gives it with the run's reason.
var errRunFailed = errors.New("the run has failed")

// errFinishedElsewhere ends the assignment watch of a trainer that has no part in a run that
// has succeeded.
var errFinishedElsewhere = errors.New("the run succeeded without this trainer")

// Assignments forwards every assignment in which this trainer has a rank.
func (c *clusterCoord) Assignments(ctx context.Context) (<-chan trainer.Assignment, error) {
	out := make(chan trainer.Assignment, 16)
	go func() {
		defer close(out)
		for {
			err := c.watch(ctx, out)
			if ctx.Err() != nil || c.noteReplaced(err) {
				return
			}
			if errors.Is(err, errRunFailed) {
				c.closedBy.Store(&err)
				return
			}
			if errors.Is(err, fsm.ErrStaleIncarnation) {
				// This process joined again (it had been dropped) while the stream ran as its
				// former incarnation: watch as the new one.
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			if !errors.Is(err, fsm.ErrUnknownMember) {
				return
			}
			// A finished run refuses joins: nothing to wait for.
			if st, err := c.cli.State(ctx); err == nil && st.Status.Terminal() {
				c.finished.Store(st.Status == fsm.StatusSucceeded)
				if st.Status == fsm.StatusFailed {
					// The run failed while this trainer was away: its reason is this
					// trainer's last line, as when the stream says so.
					why := fmt.Errorf("%w: %s", errRunFailed, st.Reason)
					c.closedBy.Store(&why)
				}
				return
			}
			// Dropped after missed heartbeats (a stall, a cut link): the heartbeat loop joins
			// again; watch again meanwhile (a replica waits a few seconds for an unknown
			// member to appear) rather than ending the trainer. Found by chaos runs.
			select {
			case <-ctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return out, nil
}

// watch forwards assignments until the stream ends for good (WatchAssignment's error).
func (c *clusterCoord) watch(ctx context.Context, out chan<- trainer.Assignment) error {
	return c.cli.WatchAssignmentAs(ctx, c.id, c.inc.Load(), func(a *api.Assignment) error {
		// Before the assignment is acted on, and for a standby too: nothing may take an
		// abandoned checkpoint on this volume for a committed one.
		c.uncommitAbandoned(ctx, coordinator.HeldOf(a.Abandoned), a.Generation)
		switch a.RunStatus {
		case "failed":
			return fmt.Errorf("%w: %s", errRunFailed, a.Reason)
		case "succeeded":
			if a.Rank < 0 {
				c.finished.Store(true)
				return errFinishedElsewhere
			}
		}
		if a.Rank < 0 || a.World < 1 || len(a.Ring) != int(a.World) {
			// A standby, or too few trainers yet: wait for the next one, saying so once per
			// generation (a dropped peer's trainer sat here without a word).
			if c.log != nil && a.Generation+1 != c.waitLogged.Swap(a.Generation+1) {
				why := "not in this generation's ring: it grows at the next committed checkpoint, unless max_trainers already train"
				if a.World < 1 {
					why = "no generation runs: fewer members than min_trainers, or none of them holds the newest checkpoint (ddpm status says which)"
				}
				c.log.Info("waiting for a rank", "generation", a.Generation, "world", a.World, "why", why)
			}
			return nil
		}
		ta := trainer.Assignment{Generation: a.Generation, Rank: int(a.Rank), World: int(a.World), StartStep: a.StartStep}
		for _, p := range a.Ring {
			ta.Peers = append(ta.Peers, p.Address)
		}
		if ck := a.Checkpoint; ck != nil {
			ta.StartStep, ta.CheckpointSHA = ck.Step, ck.Sha256
			for _, h := range ck.Holders {
				if h.Id != c.id {
					ta.Holders = append(ta.Holders, h.Address)
				}
			}
		}
		select {
		case out <- ta:
		case <-ctx.Done():
		}
		return nil
	})
}

// Report queues p for the reporter goroutine (reportLoop); it never blocks the step.
func (c *clusterCoord) Report(_ context.Context, p trainer.Progress) {
	c.reports.Push(p)
}

// reportLoop sends the queued progress reports in step order. A report the coordinators did
// not answer (no leader during a re-election, all replicas away) is sent again, with the same
// request id so that it applies once, before any later one: dropping it lost that step's loss
// point for good (TestTrainerReportsSurviveCoordinatorOutage). A refusal (a stale generation or
// incarnation, a dropped member) drops it. A step skipped for a non-finite gradient goes with
// skipped set, its NaN loss and gradient norm as they are: the coordinators record it as a
// skipped point without a loss (TestSkippedStepReported).
func (c *clusterCoord) reportLoop(ctx context.Context) {
	var last *api.ReportProgressRequest // the request last tried and not answered
	c.reports.Run(ctx, 200*time.Millisecond, func(ctx context.Context, p trainer.Progress) bool {
		req := &api.ReportProgressRequest{Id: c.id, Incarnation: c.inc.Load(), Generation: p.Generation,
			Step: p.Step, Loss: p.Loss, GradNorm: p.GradNorm, Lr: p.LR, ImagesPerSec: p.ImagesPerS,
			ComputeSec: p.ComputeSec, AllreduceSec: p.AllReduceSec, WaitSec: p.WaitSec, Busbw: p.BusBW, Skipped: p.Skipped}
		if last != nil && last.Generation == req.Generation && last.Step == req.Step && last.Incarnation == req.Incarnation {
			req.RequestId = last.RequestId
		}
		// A quartile without a sample this step (NaN) goes as -1, so the others still count.
		req.LossQuartiles = make([]float64, len(p.LossQuartiles))
		for q, v := range p.LossQuartiles {
			if math.IsNaN(v) {
				v = -1
			}
			req.LossQuartiles[q] = v
		}
		if field, v := coordinator.NonFiniteField(req); field != "" {
			// A metric the coordinators record is not finite (a skipped step's loss and gradient
			// norm are not recorded, so not checked): they would refuse it, and there is no point
			// to record for it (TestSkippedStepReported).
			c.log.Warn("step with non-finite metrics not reported to the coordinators: the loss history has no point for it",
				"step", p.Step, "field", field, "value", fmt.Sprint(v), "skipped", p.Skipped)
			return false
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.cli.ReportProgress(rctx, req)
		cancel()
		if errors.Is(err, coordinator.ErrUnavailable) && ctx.Err() == nil {
			last = req
			return true
		}
		last = nil
		c.noteReplaced(err)
		return false
	})
}

// flushReports gives the reports still queued (the last steps' ones) up to d to reach the
// coordinators before the trainer leaves or exits.
func (c *clusterCoord) flushReports(d time.Duration) {
	fctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if !c.reports.Flush(fctx) {
		c.log.Warn("progress reports not delivered before exit; their loss points are missing from the coordinators' history", "reports", c.reports.Len())
	}
}

// CheckpointReady reports checkpoint step once the progress reports queued before it (the
// steps up to step) have reached the coordinators. The cluster resumes from its last committed
// checkpoint and trains the steps after it again, so a report still queued when a later one
// commits is the only one lost for good if this process dies (SIGKILL) or a new generation
// supersedes it; the coordinators' answers resume together after an outage, and the queue
// drains one report at a time while the commit lands at once. Waiting here keeps every loss
// point up to a committed checkpoint in the cluster's history (TestKilledTrainerLossHistoryComplete).
// It waits as long as the coordinators take the reports, until ctx ends.
func (c *clusterCoord) CheckpointReady(ctx context.Context, gen uint64, step int64, sha string, size int64) error {
	if c.reports != nil {
		if !c.reports.Flush(ctx) {
			return fmt.Errorf("checkpoint step %d not reported: %d progress reports of the steps before it not delivered: %w", step, c.reports.Len(), ctx.Err())
		}
		// Only with checkpoint_every above trainer.MaxReportBacklog (the queue's room).
		if n := c.reports.Overflowed(); n > c.overflowSeen {
			c.log.Warn("progress reports dropped unsent (the queue was full while no coordinator answered): ddpm loss has no point for those steps before this checkpoint",
				"reports", n-c.overflowSeen, "checkpoint", step)
			c.overflowSeen = n
		}
	}
	_, err := c.cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: c.id, Incarnation: c.inc.Load(), Generation: gen, Step: step, Sha256: sha, Size: size})
	c.noteReplaced(err)
	return err
}

// WaitCommitted polls the replicated state until step is among the committed checkpoints.
func (c *clusterCoord) WaitCommitted(ctx context.Context, step int64) (string, error) {
	for {
		st, err := c.cli.State(ctx)
		if err == nil {
			for _, ck := range st.Checkpoints {
				if ck.Step == step {
					return ck.SHA256, nil
				}
			}
			if st.Status == fsm.StatusFailed {
				return "", fmt.Errorf("%w: %s", errRunFailed, st.Reason)
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runClusterTrainer serves the ring and checkpoint transfer on --listen, joins the
// coordinators, keeps heartbeating, and runs node until the run completes.
//
// A run that succeeds (with this trainer or without it) ends it with nil, or, with
// --stay-after-done, keeps it up on these servers until SIGTERM (stayUpAfterDone).
//
// o.lis and o.httpLis are --listen and --http-addr, bound by runTrainer. A gRPC server on --listen
// that stops serving while the trainer runs (its listener's Accept failing for good) leaves the
// ring peers and checkpoint fetches without an answer: the trainer logs it (ServeLogged), leaves
// the cluster if it had joined, and ends with status 1 and one line (ErrTrainerGRPCStopped), which
// ddpm local and Kubernetes restart onto a new bind of the port. A plain HTTP server that stops is
// one ERROR line; the trainer goes on, and its failing probes say the rest.
func runClusterTrainer(ctx context.Context, stop <-chan struct{}, node *trainer.Node, run config.Run, o trainerOpts, addrs []string) (err error) {
	ctx, serveFailed := context.WithCancelCause(ctx)
	defer serveFailed(nil)
	defer func() {
		// Whatever the run was doing when the server stopped ended with ctx: the stop is the
		// trainer's end and its line.
		if cause := context.Cause(ctx); errors.Is(cause, ErrTrainerGRPCStopped) {
			err = withExit(1, cause)
		}
	}()
	outer := ctx // the process's: the run loop's own ends with the run
	sec, err := loadSecurity(o.sec, node.Log)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(append(sec.ServerOptions(), allreduce.ServerOptions()...)...)
	ep := allreduce.Register(srv)
	checkpoint.RegisterTransfer(srv, node.Store)
	go func() {
		what := coordinator.FlagAddr("--listen", o.listen, o.lis.Addr().String())
		lis := o.lis
		if sec.Insecure() {
			// Plain text: the ring's connections are direct (allreduce.DirectListener),
			// everything else reaches srv as before.
			lis = ep.DirectListener(lis)
		}
		if serr := coordinator.ServeLogged(node.Log, coordinator.MsgGRPCStopped, what, func() error { return srv.Serve(lis) }); serr != nil {
			serveFailed(fmt.Errorf("trainer: %w on %s: %v; stopping the trainer (exit 1) so that a restart binds the port again", ErrTrainerGRPCStopped, what, serr))
		}
	}()
	defer srv.Stop()
	health := newTrainerHealth(run, o.stallLimit, time.Now) // /healthz, /readyz (trainer_health.go)
	// done ends a trainer whose run has succeeded: at once, or with --stay-after-done once
	// stopped (a stop or a second signal before it: at once).
	done := func() error {
		if !o.stayAfterDone || isClosed(stop) || outer.Err() != nil {
			return nil
		}
		return stayUpAfterDone(outer, stop, node.Store, run, o, health, node.Log)
	}
	go func() {
		select {
		case <-stop:
			health.stop()
		case <-ctx.Done():
		}
	}()
	if o.httpAddr != "" {
		hl := o.httpLis
		// Named as bound in its lines, which --http-addr :0 (any free port) does not say.
		httpWhat := coordinator.FlagAddr("--http-addr", o.httpAddr, hl.Addr().String())
		reg := metrics.NewRegistry()
		node.Metrics = metrics.NewTrainer(reg)
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler(reg))
		health.register(mux)
		var hs *http.Server
		if o.httpTLS {
			// HTTPS: /healthz and /readyz to anyone (the kubelet's probes, scheme HTTPS),
			// /metrics only to a client certificate of the cluster's CA (tlsauth.GuardHTTP).
			if hs, err = sec.HTTPServer(mux); err != nil {
				return withExit(2, err)
			}
			go serveHTTPS(hs, hl, httpWhat, node.Log)
		} else {
			hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
			go coordinator.ServeLogged(node.Log, coordinator.MsgHTTPStopped, httpWhat, func() error { return hs.Serve(hl) })
		}
		defer hs.Close()
		node.Log.Info(MsgServingHTTP, "http_addr", hl.Addr().String(), "https", o.httpTLS)
	}

	cli, err := coordinator.Dial(addrs, sec, coordinator.WithLog(node.Log))
	if err != nil {
		return withExit(2, err)
	}
	defer cli.Close()
	// A trainer that left its run for a failure of its own checks that again before it joins:
	// a restart onto the same fault would start a generation only to leave it. So does one whose
	// --init weights are gone, in a run that would start it at step 0 from them. Both ask the
	// coordinators' state once, read-only (stateOnce), and only when they need it.
	pctx, pcancel := trainer.UntilStop(ctx, stop)
	state := stateOnce(pctx, cli)
	err = recheckFault(pctx, state, o.dataDir, node)
	if err == nil && pctx.Err() == nil {
		err = checkInitBeforeJoin(pctx, state, func(ctx context.Context) (*fsm.State, error) { return caughtUpState(ctx, cli) }, o.id, o.init, o.initGone, volumeHeld(node.Store), run.CheckpointEvery, initGoneGrace(run.HeartbeatTimeout.Std()), o.dataDir, node.Log)
	}
	pcancel()
	if err != nil {
		return err
	}
	if isClosed(stop) || ctx.Err() != nil {
		node.Log.Info("left before joining", "coordinators", addrs)
		return nil
	}
	held := volumeHeld(node.Store)
	advertised := o.listen
	if o.advertise != "" {
		advertised = o.advertise
	}
	join := coordinator.JoinRequest{ID: o.id, Address: advertised, Version: version.Version, ConfigHash: run.Hash(), Held: held}
	cc := &clusterCoord{cli: cli, id: o.id, addr: advertised, nonce: coordinator.NewProcessNonce(), store: node.Store, log: node.Log,
		reports: trainer.NewReportQueue(trainer.ReportBacklog(run.CheckpointEvery))}
	// Joining waits as long as the cluster does not answer (or refuses our certificate): the
	// first SIGTERM ends that wait, as it ends a step, not only the second.
	joinCtx, joinCancel := trainer.UntilStop(ctx, stop)
	// An id held by a live member at another address is refused: a second process given the
	// same --id (it gives up with the refusal), or this trainer restarted on another address
	// (its old self stops heartbeating, so the refusal ends within the heartbeat timeout).
	idWait := time.Now().Add(2 * run.HeartbeatTimeout.Std())
	// Certificates of another cluster (another CA) are refused on every try, forever: after
	// --cert-refusal-wait of nothing else, the join gives up (TestTrainerOtherCAGivesUp).
	var certRefused atomic.Pointer[error]
	go func() {
		for {
			select {
			case <-joinCtx.Done():
				return
			case <-time.After(min(max(o.certRefusalWait/30, 10*time.Millisecond), time.Second)):
			}
			if d, err := cli.CertRefusedFor(); err != nil && d >= o.certRefusalWait {
				certRefused.Store(&err)
				joinCancel()
				return
			}
		}
	}()
	node.Log.Info("joining", "coordinators", addrs, "listen", o.listen, "advertise", advertised, "config", run.Hash())
	for {
		err = cc.join(joinCtx, join)
		if !errors.Is(err, fsm.ErrIDInUse) || time.Now().After(idWait) {
			break
		}
		select {
		case <-joinCtx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	joinCancel()
	if p := certRefused.Load(); p != nil && err != nil && ctx.Err() == nil && !isClosed(stop) {
		return withExit(2, fmt.Errorf("joining %v: only certificate refusals for %v: %s; give --certs the directory of this cluster's CA (the one its coordinators were started with): %w",
			addrs, o.certRefusalWait, coordinator.Hint(*p), *p))
	}
	if err != nil && ctx.Err() == nil && isClosed(stop) {
		node.Log.Info("left before joining", "coordinators", addrs, "last_error", err.Error())
		return nil
	}
	if err != nil {
		// A run that has already succeeded (ddpm local --resume of a finished run, a trainer
		// restarted after the end): nothing left to do, and no reason to be restarted.
		if errors.Is(err, fsm.ErrRunFinished) {
			if st, serr := cli.State(ctx); serr == nil && st.Status == fsm.StatusSucceeded {
				logFinishedWithout(node, o.id, st)
				return done()
			}
		}
		return withExit(2, fmt.Errorf("joining %v: %w", addrs, err))
	}
	if o.bind != nil {
		if err := o.bind(); err != nil { // the volume's run.yaml, now that the run is accepted
			return withExit(1, err)
		}
	}
	node.Log.Info("joined", "coordinators", addrs, "config", run.Hash(), "held", len(held), "incarnation", cc.inc.Load())
	// Accepted: the volume is this run's, and keeps room for a fault record from now on.
	reserveFaultRoom(o.dataDir, node.Log)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cc.stopReplaced = cancel
	go cc.reportLoop(ctx)
	// Heartbeats: a few per timeout; a trainer the coordinator dropped joins again.
	heartbeats := make(chan struct{})
	go func() {
		defer close(heartbeats)
		every := run.HeartbeatTimeout.Std() / 4
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			_, err := cli.HeartbeatAs(ctx, o.id, cc.inc.Load())
			health.heartbeat(err)
			switch {
			case cc.noteReplaced(err):
				return
			case errors.Is(err, fsm.ErrUnknownMember):
				node.Log.Warn("dropped by the coordinator; joining again")
				// The volume may have changed since start-up (checkpoints committed, or
				// uncommitted by a rollback): the rejoin offers what it holds now.
				rejoin := join
				rejoin.Held = volumeHeld(node.Store)
				if errors.Is(cc.join(ctx, rejoin), fsm.ErrRunFinished) {
					// The run ended without us: the assignment watch sees it too and ends
					// the run here (logFinishedWithout); nothing left to heartbeat for.
					return
				}
			}
		}
	}()
	node.Coord = cc
	node.Ring = func(ctx context.Context, a trainer.Assignment) (trainer.Reducer, func(), error) {
		if a.World == 1 {
			return trainer.Solo{}, func() {}, nil
		}
		r, err := allreduce.NewRing(ep, allreduce.Config{Generation: a.Generation, Rank: a.Rank, Peers: a.Peers, Timeout: 2 * run.HeartbeatTimeout.Std(),
			DialOptions: sec.DialOptions(), Direct: sec.Insecure(), Log: node.Log})
		if err != nil {
			return nil, nil, err
		}
		return r, func() { r.Close() }, nil
	}
	node.Fetch = holderFetch(sec.DialOptions())
	health.watch(node)
	err = node.Run(ctx, stop)
	if rerr := cc.replacedErr(); rerr != nil {
		// The id is another process's now: whatever this one would still say (a leave, a
		// failure) would be about that process.
		return rerr
	}
	if err == nil && ctx.Err() == nil {
		// The last steps' reports (the final one's loss point) may still be on their way.
		cc.flushReports(5 * time.Second)
	}
	// leave leaves the cluster, so that the peers' next generation starts without us at once
	// rather than at our heartbeat timeout, and logs msg with the generation and attrs. The
	// heartbeats end first, or one could join us again after the leave.
	leave := func(msg string, attrs ...any) {
		cancel()
		<-heartbeats
		lctx, lcancel := context.WithTimeout(context.Background(), 3*time.Second)
		gen, lerr := cli.LeaveAs(lctx, o.id, cc.inc.Load())
		lcancel()
		if lerr != nil {
			node.Log.Warn("could not leave the cluster; it drops this trainer at its heartbeat timeout", "err", lerr)
			return
		}
		node.Log.Info(msg, append([]any{"generation", gen}, attrs...)...)
	}
	if cause := context.Cause(outer); errors.Is(cause, ErrTrainerGRPCStopped) {
		// The ring peers cannot reach it any more: the others go on at once without it.
		leave(MsgLeftOnFailure, "err", cause.Error())
		return withExit(1, cause)
	}
	if err == nil && isClosed(stop) {
		leave(MsgLeft) // stopped on purpose, the step in flight finished
		return nil
	}
	// The run has succeeded (with this trainer, or without it): nothing left to heartbeat for.
	stopHeartbeats := func() {
		cancel()
		<-heartbeats
	}
	if err == nil && ctx.Err() == nil {
		stopHeartbeats()
		return done()
	}
	if err != nil && cc.finished.Load() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, serr := cli.State(sctx)
		scancel()
		if serr != nil {
			// The coordinators said the run succeeded a moment ago; without their state the
			// line names no final step or holders.
			node.Log.Info(trainer.MsgRunComplete, "note", fmt.Sprintf("trainer %s: %v; this volume holds step %d (the coordinators' state is unreadable: %v)",
				o.id, errFinishedElsewhere, volumeStep(node.Store), serr))
		} else {
			logFinishedWithout(node, o.id, st)
		}
		stopHeartbeats()
		return done()
	}
	if errors.Is(err, trainer.ErrAssignmentsClosed) {
		if why := cc.closedBy.Load(); why != nil {
			return fmt.Errorf("%w: %w", err, *why)
		}
	}
	if errors.Is(err, errRunFailed) {
		return err // the run's failure, already recorded: nothing to report or leave
	}
	if err != nil && ctx.Err() == nil && trainer.FailsRun(err) {
		// Tell the cluster why the run cannot go on (divergence, a committed checkpoint of
		// another preset or config: every rank meets it alike).
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		// With the generation it trained in: the coordinator refuses reports of other
		// generations as stale, which left the run "running" and the trainer crash-looping.
		_, _ = cli.ReportProgress(rctx, &api.ReportProgressRequest{Id: o.id, Incarnation: cc.inc.Load(), Generation: node.Trainer.Generation(), Failure: err.Error()})
		rcancel()
		return err
	}
	if err != nil && ctx.Err() == nil {
		// This trainer's own failure (its volume, its disk, its copy of the data:
		// trainer.FailsRun): reported as the run's, it failed the run for every trainer
		// (TestVolumeFullLeavesRunGoing, TestDamagedDataLeavesRunGoing). Leave as a stopped
		// trainer does, so that the others go on at once in a new generation without it; exit
		// 1, and a restart (Kubernetes, ddpm local) joins again once the cause is gone (it
		// checks the recorded fault first: recheckFault). Its
		// data is refused input (as dataExit): status 2, on which ddpm local, whose trainers
		// share one copy of the data, stops the run rather than restart them on it.
		cc.flushReports(2 * time.Second)
		leave(MsgLeftOnFailure, "err", err.Error())
		// A restart checks this fault again before it joins (recheckFault): no generation
		// is started for a trainer that would leave it at once.
		// Its line gives the way on that is true where it runs: under ddpm local, resuming
		// the run rather than starting the trainer again (restartAdvice).
		err = advised(err, o.dataDir)
		recordFault(o.dataDir, node, err)
		if errors.Is(err, trainer.ErrData) || errors.Is(err, trainer.ErrInitGone) {
			return withExit(2, err) // refused input: its data, or --init weights that are gone
		}
		return withExit(1, err)
	}
	return err
}

// ErrTrainerGRPCStopped: a cluster trainer's gRPC server on --listen stopped serving while the
// trainer ran (its listener's Accept failed for good), as coordinator.ErrGRPCStopped is a
// replica's: the ring peers and checkpoint fetches get no answer from it. runClusterTrainer then
// ends with status 1 and one line matching it, which ddpm local and Kubernetes restart.
var ErrTrainerGRPCStopped = errors.New("gRPC server stopped serving")

// MsgServingHTTP is the log line of a cluster trainer serving --http-addr; its http_addr is the
// address bound (the port given, or the one --http-addr :0 got).
const MsgServingHTTP = "serving /healthz, /readyz and /metrics"

// MsgLeftOnFailure is the log message of a trainer that left the cluster on a failure of its
// own (trainer.FailsRun false: its volume, its disk, its copy of the data), before it exits
// with status 1 (2 for its data: dataExit).
const MsgLeftOnFailure = "left the cluster on a failure of this trainer; the others go on without it"

// logFinishedWithout ends a trainer that has no part in the end of its run, which succeeded
// (st is the coordinators' state saying so): it stopped or was cut off past the heartbeat
// timeout near the end and came back after the others finished, or it was started again
// afterwards. A finished run takes no joins and there is nothing left to train, so the trainer
// exits with status 0 (the run succeeded: `ddpm local` neither restarts it nor fails the run)
// after one "run complete" line whose note says where the final checkpoint is (finishedNote).
//
// First it uncommits the checkpoints on its volume that a rollback abandoned (it was away when
// the run was rolled back), then marks committed every checkpoint on its volume that the coordinators committed with
// the same sha256 and it had not marked yet (it was stopped between saving one and hearing of
// its commit), so that the volume says what the cluster knows: sample, eval and export of the
// volume, and its next join's held list, take it.
func logFinishedWithout(node *trainer.Node, id string, st *fsm.State) {
	var ab []trainer.AbandonedCheckpoint
	for _, h := range st.StillAbandoned() {
		ab = append(ab, trainer.AbandonedCheckpoint{Step: h.Step, SHA256: h.SHA256})
	}
	if _, err := trainer.UncommitAbandoned(node.Store, ab, node.Log); err != nil {
		node.Log.Warn("could not uncommit the checkpoints the cluster abandoned", "err", err)
	}
	if _, err := trainer.UncommitForgotten(node.Store, forgottenOf(st), node.Log); err != nil {
		node.Log.Warn("could not uncommit the checkpoints the cluster abandoned", "err", err)
	}
	committed := map[int64]string{}
	for _, ck := range st.Checkpoints {
		committed[ck.Step] = ck.SHA256
	}
	if infos, err := node.Store.List(); err == nil {
		for _, in := range infos {
			// The header names the sha256; only Verify shows that the bytes still hash to it
			// (a copy damaged while the trainer was down, uncommitted by UncommitDamaged).
			if in.Err == nil && !in.Committed && in.SHA256 != "" && committed[in.Step] == in.SHA256 && node.Store.Verify(in.Step) == nil {
				if err := node.Store.MarkCommitted(in.Step); err != nil {
					node.Log.Warn("could not mark a checkpoint the cluster committed", "step", in.Step, "err", err)
				}
			}
		}
	}
	final := st.TotalSteps
	if st.Run != nil {
		final = st.Run.Steps
	}
	var on []string
	for _, ck := range st.Checkpoints {
		if ck.Step == final {
			on = slices.DeleteFunc(slices.Clone(ck.Holders), func(h string) bool { return h == id })
		}
	}
	held := volumeStep(node.Store)
	node.Log.Info(trainer.MsgRunComplete, "step", final, "volume_step", held, "final_on", on, "note", finishedNote(id, final, held, on))
}

// volumeStep is the step of the newest committed checkpoint on store that verifies, 0 if none.
func volumeStep(store *checkpoint.Store) int64 {
	c, err := store.LatestCommitted()
	if err != nil {
		return 0
	}
	return c.Step
}

// finishedNote words the end of a trainer whose run finished at step final while this volume
// holds step held (0: nothing committed) and the trainers on hold the final checkpoint, e.g.
// "trainer t0: the run finished at step 100 without this trainer; this volume holds step 76;
// the final checkpoint is on t1, t2".
func finishedNote(id string, final, held int64, on []string) string {
	if held == final {
		return fmt.Sprintf("trainer %s: the run finished at step %d; this volume holds its final checkpoint", id, final)
	}
	vol := fmt.Sprintf("this volume holds step %d", held)
	if held == 0 {
		vol = "this volume holds no committed checkpoint"
	}
	where := "the final checkpoint is on " + strings.Join(on, ", ")
	if len(on) == 0 {
		where = "the coordinators record no other holder of the final checkpoint"
	}
	return fmt.Sprintf("trainer %s: the run finished at step %d without this trainer; %s; %s", id, final, vol, where)
}

// MsgLeft is the log message of a trainer that stopped on purpose and left the cluster.
const MsgLeft = "left the cluster"

// isClosed reports whether ch is closed (stop channels are only ever closed).
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// volumeHeld lists the committed checkpoints of store that read back intact (step and sha256),
// oldest first: what a join offers the coordinators. A checkpoint that fails to read is left out.
func volumeHeld(store *checkpoint.Store) []fsm.Held {
	steps, err := store.Committed()
	if err != nil {
		return nil
	}
	var held []fsm.Held
	for _, s := range steps {
		if c, err := store.Get(s); err == nil {
			held = append(held, fsm.Held{Step: s, SHA256: c.SHA256})
		}
	}
	return held
}

// holderFetch is a trainer's FetchFunc: it tries holders in order and keeps the first copy of
// step that arrives intact and hashes to sha (the committed sha256), saved into dst and marked
// committed there; a holder serving other bytes is skipped (TestHolderFetchKeepsOnlyTheCommittedSHA).
func holderFetch(dial []grpc.DialOption) trainer.FetchFunc {
	return func(ctx context.Context, holders []string, step int64, sha string, dst *checkpoint.Store) error {
		var errs []error
		for _, h := range holders {
			if err := checkpoint.FetchCommitted(ctx, h, step, sha, dst, dial...); errors.Is(err, checkpoint.ErrStorage) {
				// This volume cannot store it (full, failing, damaged): another holder's copy
				// would fare no better.
				return fmt.Errorf("fetching checkpoint step %d: %w", step, err)
			} else if err != nil {
				errs = append(errs, err)
				continue
			}
			return nil
		}
		return fmt.Errorf("fetching checkpoint step %d: %w", step, errors.Join(errs...))
	}
}

// listenTCP binds a trainer's --listen and --http-addr (net.Listen). A test replaces it to hand
// the trainer a listener of its own, one whose Accept fails (TestTrainerS26GRPCServeStopped).
var listenTCP = net.Listen

// trainerListen binds addr, the value of flag (--listen, --http-addr), for TCP (listenTCP), with
// the replicas' wording (coordinator.ListenError). A port a program listens on, an IP of no interface of this
// machine or a privileged port is the command's to change: status 2, naming the flag, the address
// and what holds the port (the trainer started twice, another program). A port held only by a
// connection's local end or a TIME_WAIT (what a restarted trainer of ddpm local meets when another
// process's outgoing connection took its recorded port while it was down) frees by itself: status
// 1, which ddpm local and Kubernetes restart. Any other error of net.Listen: status 1.
func trainerListen(flag, addr string) (net.Listener, error) {
	l, err := listenTCP("tcp", addr)
	if err == nil {
		return l, nil
	}
	err = coordinator.ListenError("trainer", flag, addr, "give another "+flag, "start the trainer again", err)
	if errors.Is(err, coordinator.ErrListen) {
		return nil, withExit(2, err)
	}
	return nil, withExit(1, err)
}
