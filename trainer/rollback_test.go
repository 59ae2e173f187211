package trainer

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// commitCoord delivers the assignments of ch and commits every checkpoint at once (a world of
// one agrees with itself), recording the reported sha256 per step.
type commitCoord struct {
	ch chan Assignment
	mu sync.Mutex
	by map[int64]string
}

func (c *commitCoord) Assignments(context.Context) (<-chan Assignment, error) { return c.ch, nil }
func (c *commitCoord) Report(context.Context, Progress)                       {}
func (c *commitCoord) CheckpointReady(_ context.Context, _ uint64, step int64, sha string, _ int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[step] = sha
	return nil
}
func (c *commitCoord) WaitCommitted(_ context.Context, step int64) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[step], nil
}

// TestRollbackRecomputesCommittedStep: a trainer whose volume holds committed checkpoints 2
// and 4 is assigned a generation from 2 (the run was rolled back: 4 was abandoned). It loads 2
// from its own store, uncommits 4, and its recomputed checkpoint 4 (another generation, so
// another sha256) is stored and committed; the run completes. The recomputed checkpoint used
// to be refused (checkpoint.ErrConflict) and the trainer exited with a store error.
func TestRollbackRecomputesCommittedStep(t *testing.T) {
	tr, st := nodeTrainer(t, 6)
	tr.run.CheckpointEvery = 2
	at2 := tr.Snapshot(1, "")
	at2.Step = 2
	at4 := tr.Snapshot(1, "")
	at4.Step, at4.Params[0] = 4, at4.Params[0]+1
	sha2, err := st.Save(at2)
	if err != nil {
		t.Fatal(err)
	}
	sha4, err := st.Save(at4)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int64{2, 4} {
		if err := st.MarkCommitted(s); err != nil {
			t.Fatal(err)
		}
	}
	coord := &commitCoord{ch: make(chan Assignment, 1), by: map[int64]string{}}
	coord.ch <- Assignment{Generation: 3, Rank: 0, World: 1, Peers: []string{"a:1"}, StartStep: 2, CheckpointSHA: sha2}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: coord, Ring: SoloRing,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()
	select {
	case err := <-done:
		if err != nil {
			mu.Lock()
			t.Fatalf("Run: %v\nlog:\n%s", err, logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the run did not complete within 60 s")
	}
	mu.Lock()
	text := logs.String()
	mu.Unlock()
	if !strings.Contains(text, "the run was rolled back") || !strings.Contains(text, "steps=[4] start_step=2") {
		t.Fatalf("the log does not name the uncommitted step:\n%s", text)
	}
	c4, err := st.Get(4)
	if err != nil {
		t.Fatal(err)
	}
	if c4.SHA256 == sha4 || c4.SHA256 != coord.by[4] || c4.Generation != 3 {
		t.Fatalf("step 4 holds sha %.12s generation %d; want the recomputed %.12s of generation 3 (abandoned %.12s)", c4.SHA256, c4.Generation, coord.by[4], sha4)
	}
	if got, _ := st.Committed(); !slices.Equal(got, []int64{2, 4, 6}) {
		t.Fatalf("committed steps %v, want [2 4 6]", got)
	}
}

// TestStaleAssignmentKeepsCommitted: an assignment of an older generation than the one that
// wrote a committed checkpoint of the volume (a lagging replica re-sending its older generation
// after a failover, or a cluster rebuilt without its state) starts before that checkpoint, yet
// it was no rollback: the checkpoint stays committed. Only a newer generation from before it (a
// rollback's) uncommits it. The stale one used to uncommit it.
func TestStaleAssignmentKeepsCommitted(t *testing.T) {
	tr, st := nodeTrainer(t, 6)
	tr.run.CheckpointEvery = 2
	at2 := tr.Snapshot(1, "")
	at2.Step = 2
	at4 := tr.Snapshot(5, "")
	at4.Step, at4.Params[0] = 4, at4.Params[0]+1
	sha2, err := st.Save(at2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(at4); err != nil {
		t.Fatal(err)
	}
	for _, s := range []int64{2, 4} {
		if err := st.MarkCommitted(s); err != nil {
			t.Fatal(err)
		}
	}
	n := &Node{Trainer: tr, Store: st, Log: slog.New(slog.DiscardHandler)}
	for _, gen := range []uint64{3, 5} {
		if err := n.uncommitAbandoned(Assignment{Generation: gen, Rank: 0, World: 1, StartStep: 2, CheckpointSHA: sha2}); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.Committed(); !slices.Equal(got, []int64{2, 4}) {
			t.Fatalf("after an assignment of generation %d from step 2: committed %v, want [2 4] (checkpoint 4 is of generation 5)", gen, got)
		}
	}
	if err := n.uncommitAbandoned(Assignment{Generation: 6, Rank: 0, World: 1, StartStep: 2, CheckpointSHA: sha2}); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Committed(); !slices.Equal(got, []int64{2}) {
		t.Fatalf("after a rollback's generation 6 from step 2: committed %v, want [2]", got)
	}
}
