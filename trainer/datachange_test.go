package trainer

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// TestResumeRefusesChangedData: a trainer resuming from a committed checkpoint whose recorded
// dataset fingerprint is not its dataset's (another prepared folder swapped in at the run's
// path) stops with ErrData naming both fingerprints, saying the data is not the run's (it said
// "the dataset cannot be read", though it was read), and keeps its step-0 state; it used to
// restore and train on the other data without a word unless the config pinned a fingerprint.
func TestResumeRefusesChangedData(t *testing.T) {
	tr, st := nodeTrainer(t, 6)
	was, now := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	at2 := tr.Snapshot(1, was)
	at2.Step = 2
	sha, err := st.Save(at2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(2); err != nil {
		t.Fatal(err)
	}
	n := &Node{Trainer: tr, Store: st, Fingerprint: now, Log: slog.New(slog.DiscardHandler)}
	err = n.load(context.Background(), Assignment{Generation: 2, StartStep: 2, CheckpointSHA: sha})
	want := "trainer: this trainer's dataset is not the run's: checkpoint step 2 was trained on data of fingerprint " + was + ", this trainer's dataset has " + now +
		": the data changed since the run started, or this trainer was given other data; give the trainer the run's data"
	if !errors.Is(err, ErrData) || err.Error() != want {
		t.Fatalf("load: %v\nwant ErrData: %s", err, want)
	}
	if tr.step != 0 {
		t.Fatalf("the trainer restored step %d from the other data's checkpoint", tr.step)
	}
	// The same data resumes.
	n.Fingerprint = was
	if err := n.load(context.Background(), Assignment{Generation: 2, StartStep: 2, CheckpointSHA: sha}); err != nil || tr.step != 2 {
		t.Fatalf("load with the run's data: %v, step %d", err, tr.step)
	}
}
