package fsm

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestRollbackPastPrunedCheckpoints: keep_checkpoints 2 has pushed the commits at 50 and 100 out
// of State.Checkpoints ([150, 200]) when a rollback goes back to b's copy of 50 (or to the
// start). The commit at 100 (sha "0a") was made by the line the rollback gives up, yet it was in
// no list the rollback could move to State.Abandoned. A trainer away through the rollback comes
// back holding it as committed: it must not become the newest committed checkpoint (before, the
// join adopted it: newest committed 100 "0a0a...", the generation restarted from it, undoing
// the rollback), nor, once the recomputed line pushed its own 100 out of the list, a rollback's
// restart point.
func TestRollbackPastPrunedCheckpoints(t *testing.T) {
	for _, to := range []int64{50, 0} {
		t.Run(fmt.Sprint("to ", to), func(t *testing.T) {
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
			oldLine := func(step int64) string { return sha64(fmt.Sprintf("%02x", step/10)) }
			for step := int64(50); step <= 200; step += 50 {
				commit(step, oldLine(step))
			}
			// b's volume kept the commit at 50 of the same line.
			now++
			if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
				Held: []Held{{Step: 50, SHA256: oldLine(50)}}}}); r.Err() != nil {
				t.Fatal(r.Err())
			}
			now++
			if r := Apply(s, Command{Kind: KindRollback, Time: now, Rollback: &Rollback{ToStep: to}}); r.Err() != nil {
				t.Fatalf("rollback to %d: %v", to, r.Err())
			}
			// c was away: its volume holds the old line's 100 as committed.
			now++
			if r := Apply(s, Command{Kind: KindJoin, Time: now, Join: &Join{ID: "c", Address: "h3:1", ConfigHash: s.ConfigHash,
				Held: []Held{{Step: 100, SHA256: oldLine(100)}}}}); r.Err() != nil {
				t.Fatal(r.Err())
			}
			latest, got := s.LatestCheckpoint(), "none"
			if latest != nil {
				got = fmt.Sprintf("%d (%.4s)", latest.Step, latest.SHA256)
			}
			want := "none"
			if to == 50 {
				want = "50 (0505)"
			}
			if got != want || s.Generation.StartStep != to {
				t.Fatalf("after c joined with the old line's 100: newest committed %s, generation from %d; want %s, from %d",
					got, s.Generation.StartStep, want, to)
			}
			if to != 50 {
				return
			}
			// The new line recomputes 100..200 (other sha256s) and keep 2 pushes its 100 out:
			// c's old copy is no restart point.
			for step := int64(100); step <= 200; step += 50 {
				commit(step, sha64(fmt.Sprintf("b%x", step/50)))
			}
			if got := s.RollbackTarget(); got != 200 {
				t.Fatalf("rollback target %d, want 200", got)
			}
			if p := s.RollbackPoint(100); p != nil {
				t.Fatalf("rollback point at 100: %+v, want none (c's copy is of the abandoned line)", p)
			}
			_, err := s.PlanRollback(100)
			wantErr := "cannot roll back: step 100 lies in steps 51..100, where rollbacks abandoned checkpoints no longer listed " +
				"(a member's copy there cannot be told from an abandoned one; committed checkpoints: 150, 200; or 0 for the start)"
			if !errors.Is(err, ErrBadRollback) || err.Error() != wantErr {
				t.Fatalf("plan to c's copy of 100:\n got %v\nwant %s", err, wantErr)
			}
			// b's copy of 50, the rollback's own target, is a restart point still.
			if p := s.RollbackPoint(50); p == nil || p.SHA256 != oldLine(50) {
				t.Fatalf("rollback point at 50: %+v, want b's copy", p)
			}
			if c, err := Decode(s.Encode()); err != nil || !slices.Equal(c.AbandonedRanges, []StepRange{{Above: 50, UpTo: 100}}) {
				t.Fatalf("restored: %v, forgotten abandoned %v", err, c.AbandonedRanges)
			}
		})
	}
}
