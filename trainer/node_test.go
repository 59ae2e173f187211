package trainer

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ddpm/checkpoint"
)

// TestRunEndsWhenAssignmentsEnd: when the assignment stream ends while the node waits for a
// checkpoint commit, the generation in flight ends and Run returns an error naming the closed
// stream, instead of waiting for a commit (and an assignment) that never comes.
func TestRunEndsWhenAssignmentsEnd(t *testing.T) {
	tr, st := nodeTrainer(t, 2)
	// The stream ends as soon as the rank reports its first checkpoint (the run was settled
	// without it: cmd/ddpm's adapter closes the stream when a run succeeds with the trainer
	// outside the ring); the commit never comes.
	c := &fixedCoord{ch: make(chan Assignment, 1)}
	c.onReady = func() { close(c.ch) }
	c.ch <- Assignment{Generation: 1, Rank: 0, World: 1}
	n := &Node{Trainer: tr, Store: st, Coord: c, Ring: SoloRing, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "closed the assignment stream") {
			t.Fatalf("Run = %v, want the closed assignment stream named", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run still waits 30 s after the assignment stream ended (step %d)", tr.StepCount())
	}
}

// TestFetchedCheckpointMustMatchCommitted: a copy fetched from a holder that does not hash to
// the sha256 the assignment names (the committed one) is not restored; the node waits for the
// next generation instead of training on from it.
func TestFetchedCheckpointMustMatchCommitted(t *testing.T) {
	tr, st := nodeTrainer(t, 2)
	// The holder's copy: this trainer's state at step 0 saved as step 1.
	other := tr.Snapshot(1, "")
	other.Step = 1
	fetch := func(_ context.Context, _ []string, step int64, _ string, dst *checkpoint.Store) error {
		_, err := dst.Save(other)
		return err
	}
	asg := make(chan Assignment, 1)
	committed := strings.Repeat("0f", 32)
	asg <- Assignment{Generation: 2, Rank: 0, World: 1, StartStep: 1, CheckpointSHA: committed, Holders: []string{"peer:1"}}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: &fixedCoord{ch: asg}, Ring: SoloRing, Fetch: fetch,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		text := logs.String()
		mu.Unlock()
		if strings.Contains(text, "checkpoint not loaded") {
			if !strings.Contains(text, "fetched copy of step 1 hashes to") || !strings.Contains(text, "the committed one to 0f0f0f0f0f0f") {
				t.Fatalf("log does not name the mismatch:\n%s", text)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refusal of the fetched copy within 10 s; log:\n%s", text)
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(asg)
	<-done
	if s := tr.StepCount(); s != 0 {
		t.Fatalf("the trainer restored the mismatched copy: at step %d, want 0", s)
	}
}

// fixedCoord delivers the assignments of ch; commits never come. onReady, if set, runs once at
// the first checkpoint report.
type fixedCoord struct {
	ch      chan Assignment
	onReady func()
	once    sync.Once
}

func (c *fixedCoord) Assignments(context.Context) (<-chan Assignment, error) { return c.ch, nil }
func (c *fixedCoord) Report(context.Context, Progress)                       {}
func (c *fixedCoord) CheckpointReady(context.Context, uint64, int64, string, int64) error {
	if c.onReady != nil {
		c.once.Do(c.onReady)
	}
	return nil
}
func (c *fixedCoord) WaitCommitted(ctx context.Context, _ int64) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// nodeTrainer is a trainer of the mnist run of the given length and an empty checkpoint store.
func nodeTrainer(t *testing.T, steps int64) (*Trainer, *checkpoint.Store) {
	t.Helper()
	run, ds := mnistRun(t, steps)
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return tr, st
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestReusedGenerationNumberIsANewGeneration: an assignment re-sent with the same generation,
// ring and start (a commit added holders) leaves the generation in flight alone, but the same
// number with another ring or start (a coordinator cluster rebuilt without its state numbers
// generations from 1 again) supersedes it; it used to be ignored and the trainer stalled.
func TestReusedGenerationNumberIsANewGeneration(t *testing.T) {
	tr, st := nodeTrainer(t, 100000)
	asg := make(chan Assignment, 3)
	first := Assignment{Generation: 1, Rank: 0, World: 1, Peers: []string{"a:1"}}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: &fixedCoord{ch: asg}, Ring: SoloRing,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	count := func(msg string) int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(logs.String(), "msg="+msg)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 20 s", what)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()
	asg <- first
	waitFor("step", func() bool { return count("step") >= 2 })
	again := first
	again.Holders = []string{"b:1"}
	asg <- again
	time.Sleep(200 * time.Millisecond)
	if c := count("assignment"); c != 1 {
		t.Fatalf("the re-sent assignment of the running generation was acted on: %d assignment lines, want 1", c)
	}
	reused := first
	reused.Peers = []string{"c:1"}
	asg <- reused
	waitFor("second assignment line", func() bool { return count("assignment") == 2 })
	close(asg)
	<-done
}
