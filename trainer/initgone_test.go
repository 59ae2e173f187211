package trainer

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitGoneNeededOnlyAtStepZero: a trainer whose --init weights could not be read (moved:
// DeferInit with InitFrom's error) resumes from a committed checkpoint, taking the run's start
// record from it (InitSHA256, which sample's EMA warning reads); a generation that starts at
// step 0 fails with ErrInitGone wrapping the read's error (it names the file), instead of
// starting from the seed's initialization in the weights' place.
func TestInitGoneNeededOnlyAtStepZero(t *testing.T) {
	tr, st := nodeTrainer(t, 6)
	sum := strings.Repeat("c3", 32)
	at2 := tr.Snapshot(1, "")
	at2.Step, at2.RNG = 2, []byte(initRecord+sum)
	sha, err := st.Save(at2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(2); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(t.TempDir(), "w.safetensors")
	readErr := tr.InitFrom(gone)
	if !errors.Is(readErr, fs.ErrNotExist) {
		t.Fatalf("InitFrom of a missing file: %v, want fs.ErrNotExist", readErr)
	}
	tr.DeferInit(readErr)
	n := &Node{Trainer: tr, Store: st, Log: slog.New(slog.DiscardHandler)}
	if err := n.load(context.Background(), Assignment{Generation: 2, StartStep: 2, CheckpointSHA: sha}); err != nil {
		t.Fatalf("resume from step 2 without the --init weights: %v", err)
	}
	if tr.step != 2 || InitSHA256(tr.Snapshot(2, "").RNG) != sum {
		t.Fatalf("resumed at step %d recording %q; want step 2 recording %s", tr.step, tr.Snapshot(2, "").RNG, sum)
	}
	err = n.load(context.Background(), Assignment{Generation: 3, StartStep: 0})
	want := "trainer: the run starts at step 0 from the --init weights, which this trainer cannot read: trainer: --init " + gone + ": "
	if !errors.Is(err, ErrInitGone) || !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("load of step 0: %v\nwant ErrInitGone starting %q", err, want)
	}
	if tr.step != 2 {
		t.Fatalf("the failed step-0 load reset the trainer to step %d", tr.step)
	}
}
