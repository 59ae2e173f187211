package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/trainer"
)

// A trainer's health, served on its --http-addr next to /metrics for Kubernetes' probes
// (deploy/k8s/base/trainer.yaml). The ring port cannot serve them: it speaks mutual-TLS gRPC,
// so a kubelet could only see that it accepts connections, which a wedged process still does.
//
// GET /healthz (liveness) answers 200 while the node's main loop (trainer.Node.Run) is alive and
// 503 once it is wedged. The loop is at any moment either
//   - waiting, knowingly and for as long as others make it: for the coordinators to admit it
//     (joining), for an assignment (a standby, too few trainers, between generations), for the
//     coordinators to take a checkpoint report or commit a checkpoint, for a peer to serve a
//     checkpoint. A restart would not end any of these sooner, so waiting is always live;
//   - or working: building a generation's ring, running a step (compute and the all-reduce,
//     which fails on its own within 2×heartbeat_timeout), saving a checkpoint. Work that goes on
//     for stallAfter(run, --stall-limit) without finishing a step, reaching a wait or using the CPU (at least
//     busyShare of a core between two looks) is a wedged loop (a deadlock, a hung device or
//     disk): /healthz answers 503 and the kubelet restarts the process. Its heartbeats come
//     from another goroutine and would keep it a member for good. A step that computes longer
//     than the limit (one lsun256 sample takes ~41 s on 2 threads: a batch of 64 on one CPU
//     trainer ~43 min) stays live.
//
// GET /readyz (readiness) answers 200 when the trainer is a member of the cluster now: its loop
// is live, its join succeeded, and the coordinators acknowledged it (the join, then a heartbeat)
// within the run's heartbeat_timeout, after which they drop a silent member; 503 otherwise
// (joining, dropped, coordinators unreachable, wedged, stopping after a SIGTERM). A standby and a member waiting for
// min_trainers are ready: each takes a rank as soon as the coordinators give it one. The dataset
// is open and the model built before the endpoints serve at all (runTrainer), which is what the
// startup probe waits for.
//
// Both answer one line of text: "ok: " and what the loop does, or why not.

// trainerHealth tracks one trainer's loop through the wrappers of its parts (coord, ring, fetch)
// and the heartbeat results, and serves /healthz and /readyz. Safe for concurrent use.
type trainerHealth struct {
	now   func() time.Time
	ttl   time.Duration // the run's heartbeat_timeout: how long an acknowledgement holds
	stall time.Duration // how long work may go on without progress

	mu       sync.Mutex
	joined   bool
	contact  time.Time // the last acknowledgement by the coordinators (zero: none, or dropped)
	hbErr    error     // the last heartbeat's failure, nil after a success
	working  bool      // working (bounded by stall) rather than waiting
	stopping bool      // told to stop (SIGTERM): finishing its step, then leaving
	complete string    // the run has succeeded and the trainer stays up (stayUpAfterDone): what both answer
	since    time.Time // when the current activity began (working: the last progress)
	activity string

	cpu     func() float64 // the process's CPU seconds so far (cpuSeconds)
	cpuAt   time.Time      // when cpuMark was read (the previous look)
	cpuMark float64
	busy    time.Time // the last look that found the process computing
}

// busyShare is the share of one core the process must have used since the previous look for
// work without a completed step to count as computing (a long step on a CPU) rather than
// wedged: a deadlocked or hung loop leaves the heartbeats, the probes and the runtime, far less.
const busyShare = 0.05

// minStall is the least time work may go on without a step completing, and without computing,
// before /healthz fails: long enough for an all-reduce and a checkpoint write and fsync.
const minStall = 10 * time.Minute

// stallAfter is how long a trainer of run may work without completing a step before it counts
// as wedged: limit when positive (--stall-limit), else minStall, or four heartbeat timeouts (one
// all-reduce may wait two) if longer.
func stallAfter(run config.Run, limit time.Duration) time.Duration {
	if limit > 0 {
		return limit
	}
	return max(minStall, 4*run.HeartbeatTimeout.Std())
}

// floorStall is the least --stall-limit: whether work is computing is judged from the CPU used
// between two looks (the probes: a kubelet's period is 10 s by default), so a limit near the
// probe period would call a step that computes between probes wedged, and liveness would flap
// (a restart on every long step). A minute spans several probe periods and an ordinary
// all-reduce and checkpoint write.
const floorStall = time.Minute

// checkStallLimit refuses a negative --stall-limit, and a positive one below floorStall.
func checkStallLimit(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("--stall-limit %v: want a positive duration, or 0 for the default (10m, or 4 x heartbeat_timeout if longer)", d)
	}
	if d > 0 && d < floorStall {
		return fmt.Errorf("--stall-limit %v: want at least %v (several probe periods; a shorter limit makes /healthz fail a trainer computing between probes), or 0 for the default", d, floorStall)
	}
	return nil
}

// newTrainerHealth starts tracking a trainer of run that is joining the cluster; stallLimit is
// --stall-limit (0: stallAfter's rule; checked by checkStallLimit before the trainer starts) and
// now is the clock (time.Now; tests pass their own).
func newTrainerHealth(run config.Run, stallLimit time.Duration, now func() time.Time) *trainerHealth {
	t := now()
	return &trainerHealth{now: now, ttl: run.HeartbeatTimeout.Std(), stall: stallAfter(run, stallLimit),
		since: t, activity: "joining the cluster", cpu: cpuSeconds, cpuAt: t, cpuMark: cpuSeconds()}
}

// register adds GET /healthz and GET /readyz to mux.
func (h *trainerHealth) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, msg := h.live()
		answer(w, ok, msg)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, msg := h.ready()
		answer(w, ok, msg)
	})
}

func answer(w http.ResponseWriter, ok bool, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		fmt.Fprintf(w, "ok: %s\n", msg)
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	fmt.Fprintln(w, msg)
}

// live reports whether the loop is alive, and what it does (or since when it is stuck).
func (h *trainerHealth) live() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.complete != "" {
		return true, h.complete
	}
	return h.liveLocked()
}

func (h *trainerHealth) liveLocked() (bool, string) {
	now := h.now()
	d := now.Sub(h.since).Round(time.Second)
	if c := h.cpu(); now.After(h.cpuAt) {
		if c-h.cpuMark >= busyShare*now.Sub(h.cpuAt).Seconds() {
			h.busy = now
		}
		h.cpuAt, h.cpuMark = now, c
	}
	last := h.since
	if h.busy.After(last) {
		last = h.busy
	}
	if h.working && now.Sub(last) > h.stall {
		return false, fmt.Sprintf("stalled: %s for %s without progress (limit %s)", h.activity, d, h.stall)
	}
	return true, fmt.Sprintf("%s (for %s)", h.activity, d)
}

// ready reports whether the trainer is a live member of the cluster now.
func (h *trainerHealth) ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.complete != "" {
		return true, h.complete
	}
	ok, msg := h.liveLocked()
	switch {
	case !ok:
		return false, msg
	case h.stopping:
		return false, "stopping: finishing the current step, then leaving the cluster; " + msg
	case !h.joined:
		return false, "not a member: " + msg
	case h.contact.IsZero():
		return false, fmt.Sprintf("not a member: dropped by the coordinators (%v); joining again", h.hbErr)
	}
	if d := h.now().Sub(h.contact); d > h.ttl {
		why := ""
		if h.hbErr != nil {
			why = "; last error: " + h.hbErr.Error()
		}
		return false, fmt.Sprintf("not a member: no heartbeat acknowledged for %s (heartbeat_timeout %s%s)", d.Round(time.Millisecond), h.ttl, why)
	}
	return true, msg
}

// set records the loop's current activity, begun now.
func (h *trainerHealth) set(working bool, format string, args ...any) {
	h.mu.Lock()
	h.working, h.since, h.activity = working, h.now(), fmt.Sprintf(format, args...)
	h.mu.Unlock()
}

// stop records that the trainer was told to stop: /readyz answers 503 from now on (the
// trainer takes no new work), /healthz stays as it is while the step in flight finishes.
func (h *trainerHealth) stop() {
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
}

// done records that the run has succeeded and the trainer stays up idle (--stay-after-done):
// /healthz and /readyz answer 200 with "ok: " and msg from now on, a SIGTERM included (the
// trainer then exits at once).
func (h *trainerHealth) done(msg string) {
	h.mu.Lock()
	h.complete = msg
	h.mu.Unlock()
}

// joinedNow records a successful join: the coordinators acknowledged the trainer now.
func (h *trainerHealth) joinedNow() {
	h.mu.Lock()
	h.joined, h.contact, h.hbErr = true, h.now(), nil
	h.mu.Unlock()
}

// heartbeat records one heartbeat's outcome: a success renews the membership, ErrUnknownMember
// ends it (the coordinators dropped this trainer), other failures let it run out.
func (h *trainerHealth) heartbeat(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hbErr = err
	switch {
	case err == nil:
		h.contact = h.now()
	case errors.Is(err, fsm.ErrUnknownMember):
		h.contact = time.Time{}
	}
}

// watch puts the tracking wrappers around n's Coord, Ring and Fetch (set them first).
func (h *trainerHealth) watch(n *trainer.Node) {
	n.Coord = healthCoord{Coordinator: n.Coord, h: h}
	n.Ring = h.ring(n.Ring)
	if n.Fetch != nil {
		n.Fetch = h.fetch(n.Fetch)
	}
}

const waitingForAssignment = "waiting for an assignment"

// healthCoord reports the loop's dealings with the coordinators to h.
type healthCoord struct {
	trainer.Coordinator
	h *trainerHealth
}

// Assignments is the node's first call, made once its join succeeded.
func (c healthCoord) Assignments(ctx context.Context) (<-chan trainer.Assignment, error) {
	ch, err := c.Coordinator.Assignments(ctx)
	if err == nil {
		c.h.joinedNow()
		c.h.set(false, waitingForAssignment)
	}
	return ch, err
}

// Report follows every completed step: progress.
func (c healthCoord) Report(ctx context.Context, p trainer.Progress) {
	c.h.set(true, "training generation %d (rank %d of %d), step %d done", p.Generation, p.Rank, p.World, p.Step)
	c.Coordinator.Report(ctx, p)
}

func (c healthCoord) CheckpointReady(ctx context.Context, gen uint64, step int64, sha string, size int64) error {
	c.h.set(false, "reporting checkpoint step %d to the coordinators", step)
	if err := c.Coordinator.CheckpointReady(ctx, gen, step, sha, size); err != nil {
		c.h.set(false, waitingForAssignment) // the node ends the generation
		return err
	}
	c.h.set(true, "training generation %d, checkpoint step %d reported", gen, step)
	return nil
}

func (c healthCoord) WaitCommitted(ctx context.Context, step int64) (string, error) {
	c.h.set(false, "waiting for checkpoint step %d to commit", step)
	sha, err := c.Coordinator.WaitCommitted(ctx, step)
	if err != nil {
		// Superseded (or the run failed): the node ends the generation.
		c.h.set(false, waitingForAssignment)
		return sha, err
	}
	c.h.set(true, "training, checkpoint step %d committed", step)
	return sha, nil
}

// ring tracks building a generation's ring and training in it; the ring's release ends the
// generation (the node waits for the next assignment).
func (h *trainerHealth) ring(f trainer.RingFunc) trainer.RingFunc {
	return func(ctx context.Context, a trainer.Assignment) (trainer.Reducer, func(), error) {
		h.set(true, "building the ring of generation %d", a.Generation)
		red, release, err := f(ctx, a)
		if err != nil {
			h.set(false, waitingForAssignment)
			return red, release, err
		}
		h.set(true, "training generation %d (rank %d of %d) from step %d", a.Generation, a.Rank, a.World, a.StartStep)
		return red, func() {
			release()
			h.set(false, waitingForAssignment)
		}, nil
	}
}

// fetch tracks a checkpoint transfer from a peer (waiting) and the restore after it (work).
func (h *trainerHealth) fetch(f trainer.FetchFunc) trainer.FetchFunc {
	return func(ctx context.Context, holders []string, step int64, sha string, dst *checkpoint.Store) error {
		h.set(false, "fetching checkpoint step %d from %v", step, holders)
		err := f(ctx, holders, step, sha, dst)
		if err != nil {
			// The node retries, or gives up and waits for the next generation.
			h.set(false, "checkpoint step %d not fetched yet", step)
			return err
		}
		h.set(true, "restoring checkpoint step %d", step)
		return nil
	}
}
