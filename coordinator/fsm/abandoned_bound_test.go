package fsm

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestAbandonedBeyondBound drives MaxAbandoned+1 rollbacks through Apply, each abandoning one
// checkpoint at step 100, so the first abandoned one (sha "f000...") falls off State.Abandoned.
// A trainer that was away through them all rejoins holding it as committed: it must not become
// the newest committed checkpoint again, nor be a rollback's restart point once the recomputed
// steps pushed step 100 out of State.Checkpoints. Before AbandonedRanges the join adopted it
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
	// b's copy of 50 is no abandoned one: every forgotten checkpoint was abandoned by a rollback
	// to 50, which abandons only steps after 50. A rollback to 50 restarts from b's copy (it was
	// refused while every step up to the highest forgotten one counted as abandoned).
	if _, err := s.PlanRollback(50); err != nil {
		t.Fatalf("plan to b's copy of the never-abandoned 50: %v", err)
	}
	if p := s.RollbackPoint(50); p == nil || p.SHA256 != sha64("05") || !slices.Equal(p.Holders, []string{"b"}) {
		t.Fatalf("rollback point at 50: %+v, want b's copy 0505...", p)
	}
	if p := s.RollbackPoint(100); p != nil {
		t.Fatalf("rollback point at 100: %+v", p)
	}
	c, err := Decode(s.Encode())
	if err != nil || !slices.Equal(c.AbandonedRanges, []StepRange{{Above: 50, UpTo: 100}}) {
		t.Fatalf("restored: %v, forgotten abandoned %v", err, c.AbandonedRanges)
	}
}

// TestAbandonedBeyondBoundOneRollback: with keep_checkpoints above MaxAbandoned, one rollback
// abandons more checkpoints than the list keeps. The forgotten ones' steps (150..300) stay
// abandoned: a returning volume's copy there is neither adopted nor a rollback's restart point,
// and a rollback to one says why. A step there that no member holds is refused as an ordinary
// uncommitted step (175), and the rollback's own target (50) and the steps before it stay restart points.
func TestAbandonedBeyondBoundOneRollback(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers, run.KeepCheckpoints, run.Steps = 1, MaxAbandoned+6, 4000
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	now := int64(3)
	old := func(step int64) string { return sha64(fmt.Sprintf("a%03x", step/50)) }
	for step := int64(50); step <= 50*int64(run.KeepCheckpoints); step += 50 {
		now++
		ck := &CheckpointReport{ID: "a", Generation: s.Generation.Number, Step: step, SHA256: old(step), Size: 10}
		if r := Apply(s, Command{Kind: KindCheckpoint, Time: now, Checkpoint: ck}); r.Err() != nil {
			t.Fatalf("commit %d: %v", step, r.Err())
		}
	}
	now++
	if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: 100}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	// 150..3500 abandoned (68): 150..300 fell off the list.
	if !slices.Equal(s.AbandonedRanges, []StepRange{{Above: 100, UpTo: 300}}) || len(s.Abandoned) != MaxAbandoned {
		t.Fatalf("abandoned %d listed, forgotten %v; want 64 listed, 101..300", len(s.Abandoned), s.AbandonedRanges)
	}
	// b was away through the rollback: its volume holds 50 and 100 (never abandoned) and the
	// forgotten 200 as committed. Joining adopts nothing; the run goes on from 100.
	now++
	if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 50, SHA256: old(50)}, {Step: 100, SHA256: old(100)}, {Step: 200, SHA256: old(200)}}}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if latest := s.LatestCheckpoint(); latest.Step != 100 || latest.SHA256 != old(100) {
		t.Fatalf("after b joined: newest committed %d (%.4s), want 100", latest.Step, latest.SHA256)
	}
	_, err := s.PlanRollback(200)
	want := "cannot roll back: step 200 lies in steps 101..300, where rollbacks abandoned checkpoints no longer listed " +
		"(a member's copy there cannot be told from an abandoned one; committed checkpoints: 50, 100; or 0 for the start)"
	if !errors.Is(err, ErrBadRollback) || err.Error() != want {
		t.Fatalf("plan to b's forgotten abandoned 200:\n got %v\nwant %s", err, want)
	}
	// No volume holds 175 (no checkpoint step; a typo): no word about copies that cannot be
	// told apart.
	_, err = s.PlanRollback(175)
	want = "cannot roll back: step 175 is not a committed checkpoint (committed checkpoints: 50, 100; or 0 for the start)"
	if !errors.Is(err, ErrBadRollback) || err.Error() != want {
		t.Fatalf("plan to 175, held by no one:\n got %v\nwant %s", err, want)
	}
	if _, err := s.PlanRollback(50); err != nil {
		t.Fatalf("plan to the committed 50: %v", err)
	}
}
