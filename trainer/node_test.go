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

// endedCoord is a coordinator whose assignment stream ends as soon as the rank reports its
// first checkpoint (the run was settled without this rank: cmd/ddpm's adapter closes the
// stream when a run succeeds with the trainer outside the ring), and whose commit never comes.
type endedCoord struct {
	ch   chan Assignment
	once sync.Once
}

func (c *endedCoord) Assignments(context.Context) (<-chan Assignment, error) { return c.ch, nil }
func (c *endedCoord) Report(context.Context, Progress)                       {}
func (c *endedCoord) CheckpointReady(context.Context, uint64, int64, string, int64) error {
	c.once.Do(func() { close(c.ch) })
	return nil
}
func (c *endedCoord) WaitCommitted(ctx context.Context, _ int64) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// TestRunEndsWhenAssignmentsEnd: when the assignment stream ends while the node waits for a
// checkpoint commit, the generation in flight ends and Run returns an error naming the closed
// stream, instead of waiting for a commit (and an assignment) that never comes.
func TestRunEndsWhenAssignmentsEnd(t *testing.T) {
	run, ds := mnistRun(t, 2)
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &endedCoord{ch: make(chan Assignment, 1)}
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
