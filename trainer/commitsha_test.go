package trainer

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// otherCommitCoord accepts every checkpoint report and answers WaitCommitted with sha, a
// sha256 other than the rank's own; the assignment stream then ends.
type otherCommitCoord struct {
	ch   chan Assignment
	sha  string
	once sync.Once
}

func (c *otherCommitCoord) Assignments(context.Context) (<-chan Assignment, error) { return c.ch, nil }
func (c *otherCommitCoord) Report(context.Context, Progress)                       {}
func (c *otherCommitCoord) CheckpointReady(context.Context, uint64, int64, string, int64) error {
	return nil
}
func (c *otherCommitCoord) WaitCommitted(context.Context, int64) (string, error) {
	c.once.Do(func() { close(c.ch) })
	return c.sha, nil
}

// TestCommittedSHAMustBeOurs: when the cluster commits checkpoint step s with a sha256 other
// than the one this rank saved (its generation was superseded by one that recomputed the step:
// the generation is hashed, so the bytes differ), the rank's copy is not marked committed and
// the generation ends naming both sha256. WaitCommitted's answer used to be ignored, and the
// volume recorded as committed a copy the cluster never committed (which sample and export
// then take as the run's newest, and the next join offers as held).
func TestCommittedSHAMustBeOurs(t *testing.T) {
	tr, st := nodeTrainer(t, 2)
	other := strings.Repeat("0f", 32)
	c := &otherCommitCoord{ch: make(chan Assignment, 1), sha: other}
	c.ch <- Assignment{Generation: 1, Rank: 0, World: 1}
	var logs strings.Builder
	var mu sync.Mutex
	n := &Node{Trainer: tr, Store: st, Coord: c, Ring: SoloRing,
		Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))}
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background(), make(chan struct{})) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run still running 60 s after the assignment stream ended")
	}
	infos, err := st.List()
	if err != nil || len(infos) != 1 || infos[0].Step != 2 {
		t.Fatalf("store after the run: %+v %v, want the rank's checkpoint of step 2", infos, err)
	}
	if infos[0].Committed {
		t.Fatalf("step 2 (sha256 %.12s) is marked committed on the volume; the cluster committed %.12s", infos[0].SHA256, other)
	}
	mu.Lock()
	text := logs.String()
	mu.Unlock()
	if !strings.Contains(text, "the cluster committed 0f0f0f0f0f0f") || !strings.Contains(text, infos[0].SHA256[:12]) {
		t.Fatalf("log does not name the two sha256:\n%s", text)
	}
}
