package fsm

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// TestRollbackRevivesFailedRun: a run failed by a trainer's failure report (a full volume) is
// revived by a rollback to its newest committed checkpoint, abandoning nothing: status running,
// reason cleared, the revival an event naming the failure, a generation from that checkpoint,
// and the trainer refused while the run had failed joins again. The failure reason names the
// member's last reported step (a failure report carries none). Before: "a finished run is not
// rolled back", and the reason said "at step 0". A succeeded run is still not rolled back.
func TestRollbackRevivesFailedRun(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers = 1
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	// The trainer's restarts come with its volume's committed checkpoint.
	join := func(now int64) Result {
		j := &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}
		if now > 2 {
			j.Held = []Held{{Step: 50, SHA256: sha64("32")}}
		}
		return Apply(s, Command{Kind: KindJoin, Time: now, Join: j})
	}
	if r := join(2); r.Err() != nil {
		t.Fatal(r.Err())
	}
	gen := s.Generation.Number
	if r := Apply(s, Command{Kind: KindCheckpoint, Time: 3, Checkpoint: &CheckpointReport{ID: "a", Generation: gen, Step: 50,
		SHA256: sha64("32"), Size: 10}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	for step := int64(51); step <= 60; step++ {
		if r := Apply(s, Command{Kind: KindProgress, Time: 4, Progress: &Progress{ID: "a", Generation: gen, Step: step,
			Point: LossPoint{Loss: 0.1}}}); r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	Apply(s, Command{Kind: KindProgress, Time: 5, Progress: &Progress{ID: "a", Generation: gen,
		Failure: "save checkpoint 100: no space left on device"}})
	if want := "trainer a at step 60: save checkpoint 100: no space left on device"; s.Status != StatusFailed || s.Reason != want {
		t.Fatalf("status %s, reason %q; want failed, %q", s.Status, s.Reason, want)
	}
	if r := join(6); !errors.Is(r.Err(), ErrRunFinished) {
		t.Fatalf("join of a failed run: %v, want ErrRunFinished", r.Err())
	}
	if abandon, err := s.PlanRollback(50); err != nil || len(abandon) != 0 {
		t.Fatalf("PlanRollback(50) = %v, %v; want nothing abandoned", abandon, err)
	}
	if r := Apply(s, Command{Kind: KindRollback, Time: 7, Rollback: &Rollback{ToStep: 50}}); r.Err() != nil {
		t.Fatalf("rollback of the failed run: %v", r.Err())
	}
	if s.Status != StatusRunning || s.Reason != "" || s.Step != 50 || s.Generation.StartStep != 50 {
		t.Fatalf("after the rollback: status %s, reason %q, step %d, generation from %d", s.Status, s.Reason, s.Step, s.Generation.StartStep)
	}
	var texts []string
	for _, e := range s.Events {
		texts = append(texts, e.Text)
	}
	for _, want := range []string{
		"run revived by the rollback to step 50 (it had failed: trainer a at step 60: save checkpoint 100: no space left on device)",
		"rolled back to checkpoint 50: no checkpoint abandoned; the steps after 50 are recomputed",
	} {
		if !slices.Contains(texts, want) {
			t.Fatalf("no event %q in\n%s", want, strings.Join(texts, "\n"))
		}
	}
	if len(s.Loss.Points) != 0 { // steps 51-60 are recomputed
		t.Fatalf("loss history after the rollback: %v, want none", s.Loss.Points)
	}
	if r := join(8); r.Err() != nil {
		t.Fatalf("join after the revival: %v", r.Err())
	}
	if g := s.Generation; g.World != 1 || g.StartStep != 50 {
		t.Fatalf("generation %+v, want world 1 from step 50", g)
	}
	// A succeeded run is not rolled back.
	s.Status, s.Reason = StatusSucceeded, ""
	if _, err := s.PlanRollback(50); !errors.Is(err, ErrRunFinished) || !strings.Contains(err.Error(), "the run has succeeded; a finished run is not rolled back") {
		t.Fatalf("rollback of a succeeded run: %v", err)
	}
}
