package fsm

import (
	"errors"
	"fmt"
	"testing"
)

// TestAbandonedBeyondBound drives MaxAbandoned+1 rollbacks through Apply, each abandoning one
// checkpoint at step 100, so the first abandoned one (sha "f000...") falls off State.Abandoned.
// A trainer that was away through them all rejoins holding it as committed: it must not become
// the newest committed checkpoint again, nor be a rollback's restart point once the recomputed
// steps pushed step 100 out of State.Checkpoints. Before AbandonedUpTo the join adopted it
// (newest committed 100 with the abandoned sha256, the generation restarted from it).
func TestAbandonedBeyondBound(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers, run.KeepCheckpoints = 1, 2
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	now := int64(3)
	commit := func(step int64, sha string) {
		t.Helper()
		now++
		ck := &CheckpointReport{ID: "a", Generation: s.Generation.Number, Step: step, SHA256: sha, Size: 10}
		if r := Apply(s, Command{Kind: KindCheckpoint, Time: now, Checkpoint: ck}); r.Err() != nil {
			t.Fatalf("commit %d: %v", step, r.Err())
		}
	}
	first := sha64("f000")
	commit(50, sha64("05"))
	commit(100, first)
	for i := range MaxAbandoned + 1 {
		if i > 0 {
			commit(100, sha64(fmt.Sprintf("e%03x", i)))
		}
		now++
		if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: 50}}); r.Err() != nil {
			t.Fatalf("rollback %d: %v", i+1, r.Err())
		}
	}
	if len(s.Abandoned) != MaxAbandoned || s.Abandoned[0].SHA256 != sha64("e001") || s.Abandoned[0].Step != 100 {
		t.Fatalf("abandoned list: %d entries from %.4s", len(s.Abandoned), s.Abandoned[0].SHA256)
	}
	// b was away through every rollback and still holds the first abandoned 100 as committed.
	now++
	if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 50, SHA256: sha64("05")}, {Step: 100, SHA256: first}}}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if latest := s.LatestCheckpoint(); latest.Step != 50 || latest.SHA256 != sha64("05") || s.Generation.StartStep != 50 {
		t.Fatalf("after b rejoined with the forgotten abandoned checkpoint: newest committed %d (%.4s), generation from %d; want 50 (0505)",
			latest.Step, latest.SHA256, s.Generation.StartStep)
	}
	// The run recomputes past 100; keep 2 pushes 50 and 100 out of Checkpoints, so b's copy of
	// the abandoned 100 would be an "older checkpoint a member holds".
	for step := int64(100); step <= 200; step += 50 {
		commit(step, sha64(fmt.Sprintf("%02x", step/10)))
	}
	if got := s.RollbackTarget(); got != 200 {
		t.Fatalf("rollback target %d, want 200", got)
	}
	// Before, b's copy was offered: PlanRollback(100) planned a restart from the forgotten sha256.
	_, err := s.PlanRollback(100)
	want := "cannot roll back: checkpoint 100 was abandoned by the rollback to step 50 (committed checkpoints: 150, 200; or 0 for the start)"
	if !errors.Is(err, ErrBadRollback) || err.Error() != want {
		t.Fatalf("plan to the forgotten abandoned step:\n got %v\nwant %s", err, want)
	}
	// The price: b's copy of the never-abandoned 50 is below AbandonedUpTo too, and refused.
	_, err = s.PlanRollback(50)
	want = "cannot roll back: step 50 is at or below step 100, the newest abandoned checkpoint no longer listed " +
		"(a member's copy there cannot be told from an abandoned one; committed checkpoints: 150, 200; or 0 for the start)"
	if !errors.Is(err, ErrBadRollback) || err.Error() != want {
		t.Fatalf("plan to a held step below the forgotten ones:\n got %v\nwant %s", err, want)
	}
	if p := s.RollbackPoint(100); p != nil {
		t.Fatalf("rollback point at 100: %+v", p)
	}
	c, err := Decode(s.Encode())
	if err != nil || c.AbandonedUpTo != 100 {
		t.Fatalf("restored: %v, abandoned up to %d", err, c.AbandonedUpTo)
	}
}
