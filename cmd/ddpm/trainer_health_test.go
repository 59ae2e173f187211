package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/dataset"
	"ddpm/trainer"
)

// fakeClock is the health tracker's clock, moved by the test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// healthServer serves h's endpoints on a real loopback HTTP server.
func healthServer(t *testing.T, h *trainerHealth) string {
	t.Helper()
	mux := http.NewServeMux()
	h.register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// probe GETs url+path and checks the status code and that the body starts with prefix.
func probe(t *testing.T, url, path string, code int, prefix string) {
	t.Helper()
	resp, err := http.Get(url + path)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != code || !strings.HasPrefix(string(body), prefix) {
		t.Fatalf("GET %s: %d %q, want %d %q...", path, resp.StatusCode, body, code, prefix)
	}
}

// healthRun is a run with a 2 s heartbeat timeout: stallAfter is minStall (10 min).
func healthRun(t *testing.T) config.Run {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.HeartbeatTimeout = config.Duration(2 * time.Second)
	return run
}

// scriptCoord is a Coordinator whose WaitCommitted blocks until the test releases it.
type scriptCoord struct {
	asg       chan trainer.Assignment
	inWait    chan int64
	commit    chan string
	commitErr chan error
	reports   chan trainer.Progress
	readyErr  error
	readySeen chan int64
	mu        sync.Mutex
	readySHA  string // the sha256 of the last CheckpointReady
}

// reported is the sha256 the last CheckpointReady named: the one to commit.
func (c *scriptCoord) reported() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readySHA
}

func newScriptCoord() *scriptCoord {
	return &scriptCoord{asg: make(chan trainer.Assignment, 4), inWait: make(chan int64, 4), commit: make(chan string, 4), commitErr: make(chan error, 1),
		reports: make(chan trainer.Progress, 64), readySeen: make(chan int64, 4)}
}

func (c *scriptCoord) Assignments(context.Context) (<-chan trainer.Assignment, error) {
	return c.asg, nil
}

func (c *scriptCoord) Report(_ context.Context, p trainer.Progress) {
	select {
	case c.reports <- p:
	default:
	}
}

func (c *scriptCoord) CheckpointReady(_ context.Context, _ uint64, step int64, sha string, _ int64) error {
	c.mu.Lock()
	c.readySHA = sha
	c.mu.Unlock()
	c.readySeen <- step
	return c.readyErr
}

func (c *scriptCoord) WaitCommitted(ctx context.Context, step int64) (string, error) {
	c.inWait <- step
	select {
	case sha := <-c.commit:
		return sha, nil
	case err := <-c.commitErr:
		return "", err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// TestTrainerHealthStates walks the tracker through a trainer's life over real HTTP: joining
// (live, not ready), a member waiting (both 200), a lapsed or dropped membership (not ready),
// work within and beyond the stall limit (503 on both only beyond it), and waits on the
// coordinators, between generations and on a checkpoint fetch, which stay live however long.
func TestTrainerHealthStates(t *testing.T) {
	run := healthRun(t)
	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h := newTrainerHealth(run, 0, clk.now)
	if h.stall != 10*time.Minute || h.ttl != 2*time.Second {
		t.Fatalf("stall %v, ttl %v; want 10m0s (minStall) and the heartbeat timeout 2s", h.stall, h.ttl)
	}
	url := healthServer(t, h)

	probe(t, url, "/healthz", 200, "ok: joining the cluster (for 0s)\n")
	probe(t, url, "/readyz", 503, "not a member: joining the cluster (for 0s)\n")
	clk.add(time.Hour) // coordinators unreachable for an hour: waiting, so live
	probe(t, url, "/healthz", 200, "ok: joining the cluster (for 1h0m0s)\n")
	probe(t, url, "/readyz", 503, "not a member: joining")

	n := &trainer.Node{Coord: newScriptCoord(), Ring: trainer.SoloRing,
		Fetch: func(context.Context, []string, int64, string, *checkpoint.Store) error { return nil }}
	h.watch(n)
	coord := n.Coord.(healthCoord).Coordinator.(*scriptCoord)
	if _, err := n.Coord.Assignments(context.Background()); err != nil {
		t.Fatal(err)
	}
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment (for 0s)\n")
	probe(t, url, "/readyz", 200, "ok: waiting for an assignment (for 0s)\n")

	// The membership holds for heartbeat_timeout after the last acknowledgement.
	clk.add(2 * time.Second)
	probe(t, url, "/readyz", 200, "ok: waiting for an assignment (for 2s)\n")
	clk.add(time.Millisecond)
	probe(t, url, "/readyz", 503, "not a member: no heartbeat acknowledged for 2.001s (heartbeat_timeout 2s)\n")
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment")
	h.heartbeat(fmt.Errorf("coordinators unreachable"))
	probe(t, url, "/readyz", 503, "not a member: no heartbeat acknowledged for 2.001s (heartbeat_timeout 2s; last error: coordinators unreachable)\n")
	h.heartbeat(nil)
	probe(t, url, "/readyz", 200, "ok: waiting for an assignment")
	h.heartbeat(fmt.Errorf("heartbeat: %w", fsm.ErrUnknownMember))
	probe(t, url, "/readyz", 503, "not a member: dropped by the coordinators (heartbeat: ")
	h.heartbeat(nil)
	probe(t, url, "/readyz", 200, "ok: waiting for an assignment")

	// A generation: its ring, then steps. Work is live up to the stall limit, not beyond.
	_, release, err := n.Ring(context.Background(), trainer.Assignment{Generation: 3, Rank: 0, World: 1, StartStep: 40})
	if err != nil {
		t.Fatal(err)
	}
	probe(t, url, "/healthz", 200, "ok: training generation 3 (rank 0 of 1) from step 40 (for 0s)\n")
	clk.add(10 * time.Minute)
	h.heartbeat(nil)
	probe(t, url, "/healthz", 200, "ok: training generation 3 (rank 0 of 1) from step 40 (for 10m0s)\n")
	probe(t, url, "/readyz", 200, "ok: training generation 3")
	clk.add(time.Second)
	h.heartbeat(nil) // still heartbeating (another goroutine), yet wedged
	probe(t, url, "/healthz", 503, "stalled: training generation 3 (rank 0 of 1) from step 40 for 10m1s without progress (limit 10m0s)\n")
	probe(t, url, "/readyz", 503, "stalled: training generation 3")
	n.Coord.Report(context.Background(), trainer.Progress{Step: 41, Generation: 3, Rank: 0, World: 1})
	if p := <-coord.reports; p.Step != 41 {
		t.Fatalf("the wrapper forwarded step %d, want 41", p.Step)
	}
	probe(t, url, "/healthz", 200, "ok: training generation 3 (rank 0 of 1), step 41 done (for 0s)\n")
	probe(t, url, "/readyz", 200, "ok: training generation 3 (rank 0 of 1), step 41 done")

	// Checkpoint: reporting it and waiting for the commit are waits on the coordinators.
	if err := n.Coord.CheckpointReady(context.Background(), 3, 50, "sha", 1); err != nil || <-coord.readySeen != 50 {
		t.Fatalf("CheckpointReady through the wrapper: %v", err)
	}
	probe(t, url, "/healthz", 200, "ok: training generation 3, checkpoint step 50 reported (for 0s)\n")
	done := make(chan string, 1)
	go func() { sha, _ := n.Coord.WaitCommitted(context.Background(), 50); done <- sha }()
	if s := <-coord.inWait; s != 50 {
		t.Fatalf("WaitCommitted(%d), want 50", s)
	}
	probe(t, url, "/healthz", 200, "ok: waiting for checkpoint step 50 to commit (for 0s)\n")
	clk.add(time.Hour)
	h.heartbeat(nil)
	probe(t, url, "/healthz", 200, "ok: waiting for checkpoint step 50 to commit (for 1h0m0s)\n")
	probe(t, url, "/readyz", 200, "ok: waiting for checkpoint step 50 to commit")
	coord.commit <- "abc"
	if sha := <-done; sha != "abc" {
		t.Fatalf("WaitCommitted through the wrapper returned %q", sha)
	}
	probe(t, url, "/healthz", 200, "ok: training, checkpoint step 50 committed (for 0s)\n")
	clk.add(10*time.Minute + time.Second)
	probe(t, url, "/healthz", 503, "stalled: training, checkpoint step 50 committed for 10m1s")

	// A wait for a commit that ends in an error (superseded) ends the generation: waiting.
	go func() { _, err := n.Coord.WaitCommitted(context.Background(), 60); done <- fmt.Sprint(err) }()
	<-coord.inWait
	coord.commitErr <- context.Canceled
	if e := <-done; e != context.Canceled.Error() {
		t.Fatalf("WaitCommitted error through the wrapper: %s", e)
	}
	clk.add(time.Hour)
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment (for 1h0m0s)\n")
	coord.readyErr = fmt.Errorf("stale generation")
	if err := n.Coord.CheckpointReady(context.Background(), 3, 60, "sha", 1); err != coord.readyErr || <-coord.readySeen != 60 {
		t.Fatalf("CheckpointReady error through the wrapper: %v", err)
	}
	clk.add(time.Hour)
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment (for 1h0m0s)\n")

	// The generation ends: the ring's release puts the loop back to waiting, for any time.
	release()
	clk.add(time.Hour)
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment (for 1h0m0s)\n")

	// A ring that cannot be built: back to waiting.
	n.Ring = h.ring(func(context.Context, trainer.Assignment) (trainer.Reducer, func(), error) {
		return nil, nil, fmt.Errorf("no ring")
	})
	if _, _, err := n.Ring(context.Background(), trainer.Assignment{Generation: 4, World: 2}); err == nil || err.Error() != "no ring" {
		t.Fatalf("ring error through the wrapper: %v", err)
	}
	clk.add(time.Hour)
	probe(t, url, "/healthz", 200, "ok: waiting for an assignment (for 1h0m0s)\n")

	// A checkpoint fetch waits on peers; a failed one leaves the loop waiting; a fetched one is
	// restored (work).
	fetchErr := fmt.Errorf("holder down")
	n.Fetch = h.fetch(func(context.Context, []string, int64, string, *checkpoint.Store) error { return fetchErr })
	if err := n.Fetch(context.Background(), []string{"p:1"}, 60, "", nil); err != fetchErr {
		t.Fatalf("fetch error through the wrapper: %v", err)
	}
	clk.add(time.Hour)
	probe(t, url, "/healthz", 200, "ok: checkpoint step 60 not fetched yet (for 1h0m0s)\n")
	fetchErr = nil
	if err := n.Fetch(context.Background(), []string{"p:1"}, 60, "", nil); err != nil {
		t.Fatal(err)
	}
	probe(t, url, "/healthz", 200, "ok: restoring checkpoint step 60 (for 0s)\n")
	clk.add(10*time.Minute + time.Second)
	probe(t, url, "/healthz", 503, "stalled: restoring checkpoint step 60 for 10m1s")

	// Told to stop (SIGTERM): not ready at once, live while the step in flight finishes.
	n.Ring = h.ring(trainer.SoloRing)
	if _, _, err := n.Ring(context.Background(), trainer.Assignment{Generation: 5, World: 1, StartStep: 60}); err != nil {
		t.Fatal(err)
	}
	h.heartbeat(nil)
	probe(t, url, "/readyz", 200, "ok: training generation 5")
	h.stop()
	probe(t, url, "/readyz", 503, "stopping: finishing the current step, then leaving the cluster; training generation 5")
	probe(t, url, "/healthz", 200, "ok: training generation 5")

	// Only GET is served.
	resp, err := http.Post(url+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /healthz: %d, want 405", resp.StatusCode)
	}
}

// TestHealthStallLimitFollowsHeartbeatTimeout: a run whose heartbeat timeout is long (one
// all-reduce may wait two of them) gets four heartbeat timeouts of work before it is stalled;
// a --stall-limit given replaces the rule, shorter or longer.
func TestHealthStallLimitFollowsHeartbeatTimeout(t *testing.T) {
	run := healthRun(t)
	for _, tc := range []struct{ hb, limit, want time.Duration }{
		{5 * time.Second, 0, 10 * time.Minute},
		{150 * time.Second, 0, 10 * time.Minute},
		{5 * time.Minute, 0, 20 * time.Minute},
		{5 * time.Minute, 90 * time.Second, 90 * time.Second},
		{5 * time.Second, time.Hour, time.Hour},
	} {
		run.HeartbeatTimeout = config.Duration(tc.hb)
		if got := stallAfter(run, tc.limit); got != tc.want {
			t.Errorf("stallAfter(heartbeat_timeout %v, --stall-limit %v) = %v, want %v", tc.hb, tc.limit, got, tc.want)
		}
	}
}

// TestTrainerStallLimitFlag: `ddpm trainer --stall-limit` moves the moment /healthz turns 503
// for work without progress, over real HTTP: with 90s a ring stalls at 1m31s, with 30m it is
// still live past the 10 minutes of the default and stalls at 30m1s. A negative value is
// refused before anything is opened or written, with one line and exit 2.
func TestTrainerStallLimitFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	args := []string{"trainer", "--standalone", "--data-dir", dir, "--preset", "mnist", "--stall-limit", "-5s"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--stall-limit -5s: want a positive duration, or 0 for the default (10m, or 4 x heartbeat_timeout if longer)")
	mustNotExist(t, dir)
	// Below the floor (a few probe periods) liveness would flap: refused the same way.
	for _, v := range []string{"1ms", "59s"} {
		args := []string{"trainer", "--standalone", "--data-dir", dir, "--preset", "mnist", "--stall-limit", v}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "--stall-limit "+v+": want at least 1m0s (several probe periods; a shorter limit makes /healthz fail a trainer computing between probes), or 0 for the default")
		mustNotExist(t, dir)
	}

	trainerCmd, _, err := rootCmd.Find([]string{"trainer"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resetFlags(rootCmd) })
	for _, tc := range []struct {
		flag       string
		live       []time.Duration // still 200 after this much work without progress
		stalledMsg string          // the 503 line one second after the last
	}{
		{"90s", []time.Duration{90 * time.Second},
			"stalled: training generation 3 (rank 0 of 1) from step 40 for 1m31s without progress (limit 1m30s)\n"},
		{"30m", []time.Duration{10*time.Minute + time.Second, 30 * time.Minute},
			"stalled: training generation 3 (rank 0 of 1) from step 40 for 30m1s without progress (limit 30m0s)\n"},
	} {
		resetFlags(rootCmd)
		if err := trainerCmd.ParseFlags([]string{"--stall-limit", tc.flag}); err != nil {
			t.Fatal(err)
		}
		limit, err := trainerCmd.Flags().GetDuration("stall-limit")
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		clk := &fakeClock{t: t0}
		h := newTrainerHealth(healthRun(t), limit, clk.now)
		url := healthServer(t, h)
		n := &trainer.Node{Coord: newScriptCoord(), Ring: trainer.SoloRing}
		h.watch(n)
		if _, _, err := n.Ring(context.Background(), trainer.Assignment{Generation: 3, Rank: 0, World: 1, StartStep: 40}); err != nil {
			t.Fatal(err)
		}
		for _, d := range tc.live {
			clk.add(t0.Add(d).Sub(clk.now()))
			probe(t, url, "/healthz", 200, fmt.Sprintf("ok: training generation 3 (rank 0 of 1) from step 40 (for %v)\n", d))
		}
		clk.add(time.Second)
		probe(t, url, "/healthz", 503, tc.stalledMsg)
	}
}

// wedgeRing is a generation's reducer that hangs in AllReduce, ignoring its context, until the
// test lets it go: a wedged step.
type wedgeRing struct {
	entered chan struct{}
	release chan struct{}
}

func (w *wedgeRing) AllReduce(context.Context, []float32) error {
	w.entered <- struct{}{}
	<-w.release
	return nil
}

// healthNodeParts builds what a real trainer.Node of a 2-step MNIST run needs: the run, its
// dataset, a replica and a checkpoint store in a temporary folder (closed at cleanup).
func healthNodeParts(t *testing.T) (config.Run, dataset.Dataset, *trainer.Trainer, *checkpoint.Store) {
	t.Helper()
	run := healthRun(t)
	run.Steps, run.GlobalBatch, run.CheckpointEvery, run.WarmupSteps = 2, 4, 2, 1
	ds, err := dataset.Open(run.Dataset, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := trainer.New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return run, ds, tr, st
}

// TestTrainerHealthWedgedNode runs a real trainer.Node (the mnist U-Net on MNIST) whose step
// hangs in its all-reduce: /healthz and /readyz stay 200 until the stall limit passes, then
// answer 503 while the trainer still heartbeats; once the step completes they answer 200 again,
// and the run finishes through the wrapped coordinator.
func TestTrainerHealthWedgedNode(t *testing.T) {
	run, ds, tr, st := healthNodeParts(t)

	clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	h := newTrainerHealth(run, 0, clk.now)
	url := healthServer(t, h)
	coord := newScriptCoord()
	wedge := &wedgeRing{entered: make(chan struct{}), release: make(chan struct{})}
	n := &trainer.Node{Trainer: tr, Store: st, Coord: coord, Fingerprint: ds.Fingerprint(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ring: func(context.Context, trainer.Assignment) (trainer.Reducer, func(), error) {
			return wedge, func() {}, nil
		}}
	h.watch(n)
	coord.asg <- trainer.Assignment{Generation: 1, Rank: 0, World: 1}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()

	<-wedge.entered // step 1 is in its all-reduce, and stays there
	h.heartbeat(nil)
	probe(t, url, "/healthz", 200, "ok: training generation 1 (rank 0 of 1) from step 0 (for 0s)\n")
	probe(t, url, "/readyz", 200, "ok: training generation 1 (rank 0 of 1) from step 0 (for 0s)\n")
	clk.add(10*time.Minute + time.Second)
	h.heartbeat(nil)
	probe(t, url, "/healthz", 503, "stalled: training generation 1 (rank 0 of 1) from step 0 for 10m1s without progress (limit 10m0s)\n")
	probe(t, url, "/readyz", 503, "stalled: training generation 1")

	wedge.release <- struct{}{} // step 1 completes
	<-wedge.entered             // step 2 is in its all-reduce
	probe(t, url, "/healthz", 200, "ok: training generation 1 (rank 0 of 1), step 1 done (for 0s)\n")
	probe(t, url, "/readyz", 200, "ok: training generation 1 (rank 0 of 1), step 1 done")
	wedge.release <- struct{}{}
	if s := <-coord.readySeen; s != 2 {
		t.Fatalf("checkpoint step %d reported, want 2", s)
	}
	// The final checkpoint's commit is awaited twice: by the checkpoint, then by the run's end.
	for range 2 {
		if s := <-coord.inWait; s != 2 {
			t.Fatalf("WaitCommitted(%d), want 2", s)
		}
		clk.add(time.Hour)
		probe(t, url, "/healthz", 200, "ok: waiting for checkpoint step 2 to commit (for 1h0m0s)\n")
		coord.commit <- coord.reported()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not finish after the commit")
	}
}

// spinRing's first AllReduce computes (spins on a CPU) for spin, like the step of a model too
// big for the stall limit on a CPU; later ones hang without computing until released.
type spinRing struct {
	spin    time.Duration
	calls   int
	entered chan struct{}
	release chan struct{}
}

func (r *spinRing) AllReduce(context.Context, []float32) error {
	r.calls++
	if r.calls == 1 {
		x := 1.0
		for end := time.Now().Add(r.spin); time.Now().Before(end); {
			for range 1000 {
				x = x*1.0000001 + 1e-9
			}
		}
		_ = fmt.Sprint(x)
		return nil
	}
	r.entered <- struct{}{}
	<-r.release
	return nil
}

// TestHealthSlowStepStaysLive: a real mnist Node on the real clock and the process's real CPU
// time, with a 400 ms stall limit. A step that computes for 2 s (5 limits; measured: one lsun256
// sample takes 41 s on 2 threads, so its batch of 64 on one CPU trainer takes ~43 min against
// the 10 min minStall) keeps /healthz 200 throughout; a step that hangs without computing turns
// it 503 once the limit passes. Before, any step longer than the limit was "stalled" and the
// kubelet restarted the trainer at every attempt of its first step: the run never advanced.
func TestHealthSlowStepStaysLive(t *testing.T) {
	run, ds, tr, st := healthNodeParts(t)
	h := newTrainerHealth(run, 0, time.Now)
	h.stall = 400 * time.Millisecond
	url := healthServer(t, h)
	coord := newScriptCoord()
	ring := &spinRing{spin: 2 * time.Second, entered: make(chan struct{}), release: make(chan struct{})}
	n := &trainer.Node{Trainer: tr, Store: st, Coord: coord, Fingerprint: ds.Fingerprint(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ring: func(context.Context, trainer.Assignment) (trainer.Reducer, func(), error) {
			return ring, func() {}, nil
		}}
	h.watch(n)
	coord.asg <- trainer.Assignment{Generation: 1, Rank: 0, World: 1}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()

	// Step 1 computes: live at every probe however long it takes.
	sawStep1 := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case p := <-coord.reports:
			if p.Step == 1 {
				sawStep1 = true
			}
		default:
		}
		if sawStep1 {
			break
		}
		probe(t, url, "/healthz", 200, "ok: ")
		time.Sleep(100 * time.Millisecond)
	}
	if !sawStep1 {
		t.Fatal("step 1 did not complete")
	}
	// Step 2 hangs in its all-reduce without computing: stalled once the limit passes.
	<-ring.entered
	stalled := false
	for deadline := time.Now().Add(10 * time.Second); !stalled && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		stalled, _ = h.live()
		stalled = !stalled
	}
	if !stalled {
		t.Fatal("a step hanging without computing is still live after 10 s (limit 400ms)")
	}
	probe(t, url, "/healthz", 503, "stalled: training generation 1 (rank 0 of 1), step 1 done for ")
	ring.release <- struct{}{}
	if s := <-coord.readySeen; s != 2 {
		t.Fatalf("checkpoint step %d reported, want 2", s)
	}
	for range 2 {
		<-coord.inWait
		coord.commit <- coord.reported()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not finish after the commit")
	}
}
