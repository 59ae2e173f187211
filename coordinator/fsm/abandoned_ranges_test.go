package fsm

import (
	"fmt"
	"slices"
	"testing"
)

// TestForgottenRangesKeepTheGap: a rollback to 0 past pruned checkpoints forgets steps 1..50; the
// recomputed line runs to 400 and a later rollback goes to b's copy of its 200, forgetting
// 201..300. Steps 51..200 were never forgotten: once the newest line pushed 200 out of the
// list, c's copy there (the line's own restart point) is a rollback restart point still. With
// one range, the hull of both, the forgotten steps were 1..300 and the rollback to 200 was
// refused ("step 200 lies in steps 1..300, where rollbacks abandoned checkpoints no longer
// listed"). A snapshot keeps the ranges.
func TestForgottenRangesKeepTheGap(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers, run.KeepCheckpoints, run.Steps = 3, 2, 1000
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	now := int64(3)
	ids := []string{"a"} // the members that report each checkpoint
	commit := func(step int64, sha string) {
		t.Helper()
		for _, id := range ids {
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
	rollback := func(to int64) {
		t.Helper()
		now++
		if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: to}}); r.Err() != nil {
			t.Fatalf("rollback to %d: %v", to, r.Err())
		}
	}
	line := func(tag string) func(int64) string {
		return func(step int64) string { return sha64(fmt.Sprintf("%s%02x", tag, step/10)) }
	}
	l1, l2, l3 := line("a"), line("b"), line("c")
	for step := int64(50); step <= 150; step += 50 {
		commit(step, l1(step))
	}
	rollback(0) // the list [100, 150]: 50 was pruned, forgotten
	for step := int64(50); step <= 400; step += 50 {
		commit(step, l2(step))
	}
	// b's volume kept the recomputed line's 200.
	now++
	if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 200, SHA256: l2(200)}}}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	rollback(200) // the list [350, 400]: 250 and 300 pruned, forgotten
	ids = []string{"a", "b"}
	want := []StepRange{{0, 50}, {200, 300}}
	if !slices.Equal(s.AbandonedRanges, want) {
		t.Fatalf("forgotten %v; want %v", s.AbandonedRanges, want)
	}
	for step := int64(250); step <= 350; step += 50 {
		commit(step, l3(step))
	}
	// c's volume kept 200, the restart point of the line now in force.
	now++
	if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "c", Address: "h3:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 200, SHA256: l2(200)}}}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	if p := s.RollbackPoint(200); p == nil || p.SHA256 != l2(200) {
		_, err := s.PlanRollback(200)
		t.Fatalf("rollback point at 200: %+v (%v), want c's copy", p, err)
	}
	c, err := Decode(s.Encode())
	if err != nil || !slices.Equal(c.AbandonedRanges, want) {
		t.Fatalf("restored: %v, forgotten %v", err, c.AbandonedRanges)
	}
}

// TestAddStepRangeBound: ranges that overlap or touch merge; past MaxAbandonedRanges the two
// closest merge, so the list stays bounded and only ever grows what is forgotten.
func TestAddStepRangeBound(t *testing.T) {
	rs := addStepRange(nil, StepRange{100, 200})
	rs = addStepRange(rs, StepRange{300, 400})
	rs = addStepRange(rs, StepRange{200, 250}) // touches the first
	rs = addStepRange(rs, StepRange{0, 50})
	if want := []StepRange{{0, 50}, {100, 250}, {300, 400}}; !slices.Equal(rs, want) {
		t.Fatalf("got %v, want %v", rs, want)
	}
	rs = addStepRange(rs, StepRange{40, 310}) // spans them all
	if want := []StepRange{{0, 400}}; !slices.Equal(rs, want) {
		t.Fatalf("got %v, want %v", rs, want)
	}
	rs = nil
	for i := int64(0); i <= MaxAbandonedRanges; i++ {
		gap := int64(10)
		if i == 7 {
			gap = 5 // the closest pair: ranges 6 and 7
		}
		start := i * 100
		if i >= 7 {
			start -= 10 - gap
		}
		rs = addStepRange(rs, StepRange{start, start + 90})
	}
	if len(rs) != MaxAbandonedRanges || rs[6] != (StepRange{600, 785}) {
		t.Fatalf("%d ranges, the 7th %v; want %d, {600 785}", len(rs), rs[6], MaxAbandonedRanges)
	}
}
