package fsm

import (
	"fmt"
	"testing"
)

// spanRange is the smallest and largest Count of h's points other than the first and the
// newest (the ones compaction merges).
func spanRange(h LossHistory) (lo, hi int64) {
	lo = 1 << 62
	for _, p := range h.Points[1 : len(h.Points)-1] {
		lo, hi = min(lo, p.Count), max(hi, p.Count)
	}
	return lo, hi
}

// TestReviewLossHistorySpansEven: 800000 reports (the paper's CIFAR-10 run, one per step) into
// a history of DefaultLossCapacity points. By AddEven (rules 3) no merged point covers more than
// 4*800000/1024 = 3125 steps and the first half of the run keeps an eighth of the capacity in points or
// more; a rollback to
// step 400000 keeps the points up to it (about half the history). By Add (rules 2 and before)
// one point covered steps 2..795118, 99.4% of the run, and the rollback left only step 1. The
// first compaction is the same in both: 1025 reports give steps 2-3, 4-5, ... merged pairwise.
func TestReviewLossHistorySpansEven(t *testing.T) {
	const n = 800_000
	even, old := NewLossHistory(DefaultLossCapacity), NewLossHistory(DefaultLossCapacity)
	for s := int64(1); s <= n; s++ {
		p := LossPoint{Step: s, Loss: 1 / float64(s), LR: 2e-4, ImagesPerSec: 100}
		even.AddEven(p)
		old.Add(p)
		if s == DefaultLossCapacity+1 {
			if fmt.Sprint(even.Points) != fmt.Sprint(old.Points) {
				t.Fatalf("after %d reports the histories differ:\neven %v\nold  %v", s, even.Points, old.Points)
			}
		}
	}
	_, hi := spanRange(even)
	older := 0 // points of the first half of the run
	for _, p := range even.Points {
		if p.Step <= n/2 {
			older++
		}
	}
	if hi > 4*n/DefaultLossCapacity || older < DefaultLossCapacity/8 {
		t.Errorf("AddEven: largest span %d steps (want at most %d), %d points in the first half of the run (want %d or more)",
			hi, 4*n/DefaultLossCapacity, older, DefaultLossCapacity/8)
	}
	if _, oldHi := spanRange(old); oldHi < n/2 {
		t.Errorf("Add: largest span %d, the skew this test measures is gone (want over %d)", oldHi, n/2)
	}
	if even.Points[0].Step != 1 || even.Points[len(even.Points)-1].Step != n {
		t.Errorf("AddEven: first point step %d, newest %d; want 1 and %d", even.Points[0].Step, even.Points[len(even.Points)-1].Step, n)
	}
	var minLoss float64 = 1
	for _, p := range even.Points {
		minLoss = min(minLoss, p.LossMin)
	}
	if minLoss != 1/float64(n) {
		t.Errorf("AddEven: smallest LossMin %v, want the run's %v", minLoss, 1/float64(n))
	}
	even.Truncate(n / 2)
	old.Truncate(n / 2)
	if len(even.Points) < DefaultLossCapacity/8 || len(old.Points) != 1 {
		t.Errorf("after a rollback to step %d: AddEven keeps %d points, Add %d; want over %d and (as measured before) 1",
			n/2, len(even.Points), len(old.Points), DefaultLossCapacity/8)
	}
}

// TestReviewLossCompactionByReleaseRules: one log of 20000 progress reports applied to two states
// whose leader's release record says rules 2 and RulesVersion: the first compacts as rules 2 did
// (Add), the second evenly (AddEven), each matching a history built directly that way. A replica
// replaying entries written before a rules-3 leader compacts them as they were compacted.
func TestReviewLossCompactionByReleaseRules(t *testing.T) {
	if RulesVersion < 3 {
		t.Fatalf("RulesVersion %d: even compaction is rules 3", RulesVersion)
	}
	for _, rules := range []int{2, RulesVersion} {
		s := New()
		ok := func(c Command) {
			t.Helper()
			if r := Apply(s, c); r.Err() != nil {
				t.Fatalf("rules %d: %s: %v", rules, c.Kind, r.Err())
			}
		}
		ok(Command{Kind: KindRelease, Time: 1, Release: &Release{Version: "v", Rules: rules, Term: 1}})
		run := mnistRun(t)
		run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = 1_000_000, 1000, 1, 1
		ok(Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
		ok(Command{Kind: KindJoin, Time: 1, Join: &Join{ID: "a", Address: "a:1"}})
		want := NewLossHistory(DefaultLossCapacity)
		for step := int64(1); step <= 20000; step++ {
			p := LossPoint{Loss: 1 / float64(step), GradNorm: 1, LR: 2e-4, ImagesPerSec: 100}
			ok(Command{Kind: KindProgress, RequestID: fmt.Sprintf("p-%d", step), Time: step * 1e6,
				Progress: &Progress{ID: "a", Generation: s.Generation.Number, Step: step, Point: p}})
			p.Step, p.Time = step, step*1e6
			if rules >= 3 {
				want.AddEven(p)
			} else {
				want.Add(p)
			}
		}
		if fmt.Sprint(s.Loss.Points) != fmt.Sprint(want.Points) {
			t.Errorf("rules %d: the state's history differs from one built by the rule", rules)
		}
		_, hi := spanRange(s.Loss)
		t.Logf("rules %d: %d points, largest span %d", rules, len(s.Loss.Points), hi)
		if rules >= 3 && hi > 4*20000/DefaultLossCapacity {
			t.Errorf("rules %d: a point spans %d steps", rules, hi)
		}
		if rules < 3 && hi < 10000 {
			t.Errorf("rules %d: largest span %d; rules 2 compacted unevenly (over 10000 here)", rules, hi)
		}
	}
}
