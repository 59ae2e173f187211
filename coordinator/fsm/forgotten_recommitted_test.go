package fsm

import (
	"fmt"
	"testing"
)

// TestRecommittedInForgottenRange: keep_checkpoints 2, checkpoints every 50. A rollback to 0
// from [250, 300] forgets steps 1..200 (pruned from the list, their sha256s unknown). The
// recomputed line commits 50..400; b, which left at its 150, rejoins holding it. That copy is the
// line in force's own 150 (committed, then pruned): a rollback to it goes there, while a's copy
// of the abandoned 150 is still refused. Before, every copy in 1..200 counted as abandoned and the
// rollback to b's 150 was refused ('step 150 lies in steps 1..200'). The record survives a
// snapshot; a later rollback below 150 abandons it with the rest.
func TestRecommittedInForgottenRange(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers, run.KeepCheckpoints, run.Steps = 3, 2, 1000
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	now := int64(3)
	commit := func(step int64, sha string) {
		t.Helper()
		for _, id := range s.Generation.Ring {
			now++
			ck := &CheckpointReport{ID: id, Generation: s.Generation.Number, Step: step, SHA256: sha, Size: 10}
			if r := Apply(s, Command{Kind: KindCheckpoint, Time: now, Checkpoint: ck}); r.Err() != nil {
				t.Fatalf("commit %d by %s: %v", step, id, r.Err())
			}
		}
		if c := s.LatestCheckpoint(); c == nil || c.Step != step {
			t.Fatalf("commit %d: newest committed %+v", step, c)
		}
	}
	l1 := func(step int64) string { return sha64(fmt.Sprintf("a%02x", step/10)) }
	l2 := func(step int64) string { return sha64(fmt.Sprintf("b%02x", step/10)) }
	for step := int64(50); step <= 300; step += 50 {
		commit(step, l1(step))
	}
	now++
	if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: 0}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if !forgottenAbandoned(s, 150) {
		t.Fatalf("forgotten %v: want 150 in it", s.AbandonedRanges)
	}
	for step := int64(50); step <= 400; step += 50 {
		commit(step, l2(step))
	}
	// A copy of the abandoned line's 150 is no restart point.
	if !abandoned(s, Held{Step: 150, SHA256: l1(150)}) {
		t.Errorf("the abandoned line's 150 is not abandoned")
	}
	now++
	if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 150, SHA256: l2(150)}}}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	c, err := Decode(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*State{s, c} {
		if p := st.RollbackPoint(150); p == nil || p.SHA256 != l2(150) {
			_, err := st.PlanRollback(150)
			t.Fatalf("rollback point at 150: %+v (%v), want b's copy of the line in force", p, err)
		}
	}
	now++
	if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: 150}}); r.Err() != nil {
		t.Fatalf("rollback to b's 150: %v", r.Err())
	}
	// Taken back and pruned again, it is recorded once.
	for step := int64(200); step <= 300; step += 50 {
		commit(step, l2(step))
	}
	if n := len(s.Recommitted); n != 4 || s.Recommitted[3] != (Held{Step: 200, SHA256: l2(200)}) {
		t.Errorf("recommitted %v, want line 2's 50, 100, 150, 200", s.Recommitted)
	}
	// Rolled back below it, the recomputed 150 is abandoned with the rest.
	now++
	if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: 0}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if !abandoned(s, Held{Step: 150, SHA256: l2(150)}) || len(s.Recommitted) != 0 {
		t.Errorf("after the rollback to 0: 150 of line 2 abandoned %v, recommitted %v; want true, none",
			abandoned(s, Held{Step: 150, SHA256: l2(150)}), s.Recommitted)
	}
}
