package trainer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ddpm/allreduce"
	"ddpm/checkpoint"
)

// stopRunLog runs n until it returns (at most 20 s) and returns Run's error and the log.
func stopRunLog(t *testing.T, n *Node, logs *strings.Builder, mu *sync.Mutex, stop chan struct{}) (error, string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), stop) }()
	select {
	case err := <-done:
		mu.Lock()
		defer mu.Unlock()
		return err, logs.String()
	case <-time.After(20 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("Run still runs 20 s after the stop; log:\n%s", logs.String())
		return nil, ""
	}
}

// TestStopEndsFetch: a stop while the node fetches its start checkpoint from a holder that does
// not answer (it stops too) ends Run at once with nil and no warning: the fetch retried until
// the generation ended, so a stopped trainer kept retrying until it was killed.
func TestStopEndsFetch(t *testing.T) {
	tr, st := nodeTrainer(t, 4)
	stop := make(chan struct{})
	var once sync.Once
	fetch := func(context.Context, []string, int64, string, *checkpoint.Store) error {
		once.Do(func() { close(stop) })
		return fmt.Errorf("%w: connection refused", checkpoint.ErrTransfer)
	}
	asg := make(chan Assignment, 1)
	asg <- Assignment{Generation: 2, Rank: 0, World: 1, StartStep: 2, CheckpointSHA: strings.Repeat("0f", 32), Holders: []string{"peer:1"}}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: &fixedCoord{ch: asg}, Ring: SoloRing, Fetch: fetch,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	err, text := stopRunLog(t, n, &logs, &mu, stop)
	if err != nil || strings.Contains(text, "level=WARN") || !strings.Contains(text, `msg="stopped while loading the checkpoint" step=2`) {
		t.Fatalf("Run = %v, want nil, one info line and no warning; log:\n%s", err, text)
	}
}

// peerGoneReducer is a ring whose peer stops: the first all-reduce closes stop (the signal
// reaches this trainer as the step runs) and fails as a ring whose neighbour went away does.
type peerGoneReducer struct{ stop chan struct{} }

func (r peerGoneReducer) AllReduce(context.Context, []float32) error {
	close(r.stop)
	return fmt.Errorf("%w: rank 1: stream from predecessor 0 (%v)", allreduce.ErrPeerLost, context.Canceled)
}

// TestStopWithPeersIsNoWarning: a step whose ring breaks because the peers stop with this
// trainer (ddpm local's Ctrl-C) ends Run with nil and an info line: it logged `WARN generation
// ended err="allreduce: peer lost: ... context canceled"` for an expected stop.
func TestStopWithPeersIsNoWarning(t *testing.T) {
	tr, st := nodeTrainer(t, 4)
	stop := make(chan struct{})
	asg := make(chan Assignment, 1)
	asg <- Assignment{Generation: 1, Rank: 1, World: 2, Peers: []string{"a:1", "b:1"}}
	ring := func(context.Context, Assignment) (Reducer, func(), error) {
		return peerGoneReducer{stop: stop}, func() {}, nil
	}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: &fixedCoord{ch: asg}, Ring: ring,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	err, text := stopRunLog(t, n, &logs, &mu, stop)
	want := `level=INFO msg="generation ended while stopping" generation=1 step=0 err="allreduce: peer lost: rank 1: stream from predecessor 0 (context canceled)"`
	if err != nil || strings.Contains(text, "level=WARN") || !strings.Contains(text, want) {
		t.Fatalf("Run = %v, want nil and the line\n%s\nno warning; log:\n%s", err, want, text)
	}
}

// TestUntilStop: the context UntilStop returns ends when stop is closed (the parent goes on),
// when the parent ends, and when its cancel function is called; each way, the goroutine that
// watches stop ends with it.
func TestUntilStop(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	for _, way := range []string{"stop", "parent", "cancel"} {
		parent, cancelParent := context.WithCancel(context.Background())
		stop := make(chan struct{})
		ctx, cancel := UntilStop(parent, stop)
		if err := ctx.Err(); err != nil {
			t.Fatalf("%s: ended before anything happened: %v", way, err)
		}
		switch way {
		case "stop":
			close(stop)
		case "parent":
			cancelParent()
		case "cancel":
			cancel()
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the context did not end within 5 s", way)
		}
		if ctx.Err() != context.Canceled {
			t.Errorf("%s: ctx.Err() = %v, want context.Canceled", way, ctx.Err())
		}
		if way == "stop" && parent.Err() != nil {
			t.Errorf("stop: the parent ended too: %v", parent.Err())
		}
		cancel()
		cancelParent()
		goleak.VerifyNone(t, ignore)
	}
}
