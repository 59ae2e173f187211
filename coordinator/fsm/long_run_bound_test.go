package fsm

import (
	"fmt"
	"testing"
)

// TestLongRunStateBounded plays a run of a million steps at one progress report per rank per
// step, each with its own request id as trainers send them, a checkpoint every 1000 steps, a
// skipped step in every thousand, and a second trainer that joins, enters the ring at the next
// checkpoint and leaves mid-way (the ring restarts from the last checkpoint and recomputes 500
// steps) in every 50,000. The state, which is every raft snapshot, must stop growing: its
// histories stay within their documented bounds (MaxDedup request ids, MaxEvents events,
// DefaultLossCapacity loss points, keep_checkpoints checkpoints, the members present) and its
// encoding at its largest near the end (the loss history full, just before it compacts) is no
// larger than a fiftieth above the same after 500,000 steps (every history full by then),
// under 1 MiB. The loss history still spans the whole run.
func TestLongRunStateBounded(t *testing.T) {
	const n, every, churn = 1_000_000, 1000, 50_000
	run := mnistRun(t)
	run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = n, every, 1, 2
	s := New()
	ok := func(c Command) {
		t.Helper()
		if r := Apply(s, c); r.Err() != nil {
			t.Fatalf("%s at step %d: %v", c.Kind, s.Step, r.Err())
		}
	}
	ok(Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	ok(Command{Kind: KindJoin, Time: 1, Join: &Join{ID: "a", Address: "a:1"}})
	var at500k, at900k int // encoded bytes with the loss history full, after those steps
	var skipped, generations int64
	gen, step := s.Generation.Number, int64(0)
	for step < n {
		step++
		now := step * 1e6
		for _, id := range s.Generation.Ring {
			p := LossPoint{Loss: 1 / float64(step), GradNorm: 1, LR: 2e-4, ImagesPerSec: 100, ComputeSec: 0.1}
			if step%every == every/2 {
				p = LossPoint{Skipped: 1, LR: 2e-4, ComputeSec: 0.1}
			}
			ok(Command{Kind: KindProgress, RequestID: fmt.Sprintf("progress-%s-%d-%d", id, gen, step), Time: now,
				Progress: &Progress{ID: id, Generation: gen, Step: step, Point: p}})
		}
		if step%every == 0 {
			for _, id := range s.Generation.Ring {
				ok(Command{Kind: KindCheckpoint, RequestID: fmt.Sprintf("checkpoint-%s-%d-%d", id, gen, step), Time: now,
					Checkpoint: &CheckpointReport{ID: id, Generation: gen, Step: step, SHA256: fmt.Sprintf("%064x", step), Size: 1 << 20}})
			}
		}
		switch step % churn {
		case 1:
			ok(Command{Kind: KindJoin, RequestID: fmt.Sprintf("join-%d", step), Time: now,
				Join: &Join{ID: fmt.Sprintf("b-%d", step/churn), Address: "b:1"}})
		case churn/2 + every/2:
			// Once: the recomputed steps pass here again.
			if b := fmt.Sprintf("b-%d", step/churn); s.Members[b] != nil {
				if len(s.Generation.Ring) != 2 {
					t.Fatalf("step %d: ring %v, want a and %s", step, s.Generation.Ring, b)
				}
				ok(Command{Kind: KindLeave, RequestID: fmt.Sprintf("leave-%d", step), Time: now, Leave: &Leave{ID: b}})
			}
		}
		if s.Generation.Number != gen {
			if back := step - s.Generation.StartStep; back != 0 && back != every/2 {
				t.Fatalf("generation %d restarts %d steps back, at step %d", s.Generation.Number, back, step)
			}
			gen, step = s.Generation.Number, s.Generation.StartStep
			generations++
		}
		if full := len(s.Loss.Points) == DefaultLossCapacity; full && step >= 500_000 && at500k == 0 {
			at500k = len(s.Encode())
		} else if full && step >= 900_000 && at900k == 0 {
			at900k = len(s.Encode())
		}
	}
	if s.Status != StatusSucceeded || generations < 2*n/churn-2 {
		t.Fatalf("run %s after %d generations", s.Status, generations)
	}
	t.Logf("state with the loss history full after 500,000 steps: %d bytes, after 900,000: %d bytes", at500k, at900k)
	if at500k == 0 || at900k == 0 || at900k > 1<<20 || at900k > at500k+at500k/50 {
		t.Errorf("state grew from %d bytes after step 500,000 to %d after step 900,000", at500k, at900k)
	}
	if len(s.Dedup) != MaxDedup || len(s.DedupOrder) != MaxDedup || len(s.Events) != MaxEvents ||
		len(s.Loss.Points) > DefaultLossCapacity || len(s.Checkpoints) != run.KeepCheckpoints || len(s.Members) != 1 || len(s.Pending) != 0 {
		t.Errorf("dedup %d (order %d), events %d, loss points %d, checkpoints %d, members %d, pending %d",
			len(s.Dedup), len(s.DedupOrder), len(s.Events), len(s.Loss.Points), len(s.Checkpoints), len(s.Members), len(s.Pending))
	}
	// The request ids remembered are the newest MaxDedup, oldest first.
	if last := s.DedupOrder[MaxDedup-1]; last != fmt.Sprintf("checkpoint-a-%d-%d", gen, n) {
		t.Errorf("newest request id %q", last)
	}
	for _, id := range s.DedupOrder {
		if _, ok := s.Dedup[id]; !ok {
			t.Fatalf("request id %q listed but not remembered", id)
		}
	}
	for _, c := range s.Checkpoints {
		if len(c.Holders) > 3 {
			t.Errorf("checkpoint %d holders %v", c.Step, c.Holders)
		}
	}
	first, last := s.Loss.Points[0], s.Loss.Points[len(s.Loss.Points)-1]
	for _, p := range s.Loss.Points {
		skipped += p.Skipped
	}
	if first.Step != 1 || last.Step != n || skipped == 0 || skipped > n/every {
		t.Errorf("loss history from step %d to %d with %d skipped steps", first.Step, last.Step, skipped)
	}
}
