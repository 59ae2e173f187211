package fsm

import (
	"encoding/json"
	"math"
	"testing"
)

// TestSkippedStepsInLossHistory: a step skipped for a non-finite gradient is kept as a point
// marked Skipped, without a loss (whatever the report held there); merged points count the
// skipped steps they cover and take the loss, its extremes and the gradient norm over their
// trained steps only, so a skipped step neither drags the mean to 0 nor is lost. The history
// used to have no point at all for such a step.
func TestSkippedStepsInLossHistory(t *testing.T) {
	h := NewLossHistory(4)
	trained := func(step int64, loss, grad float64) LossPoint {
		return LossPoint{Step: step, Loss: loss, GradNorm: grad, LR: 0.1, LossQuartiles: [4]float64{loss, loss, loss, loss}}
	}
	skipped := func(step int64) LossPoint {
		return LossPoint{Step: step, Skipped: 7, Loss: 9, GradNorm: math.NaN(), LR: 0.3, LossQuartiles: [4]float64{9, 9, 9, 9}}
	}
	h.Add(trained(1, 1, 2))
	h.Add(skipped(2))
	if p := h.Points[1]; p.Count != 1 || p.Skipped != 1 || p.HasLoss() || p.Loss != 0 || p.LossMin != 0 || p.LossMax != 0 ||
		p.GradNorm != 0 || p.LR != 0.3 || p.LossQuartiles != [4]float64{} || p.QuartilesMissing != [4]int64{1, 1, 1, 1} {
		t.Fatalf("skipped point %+v", p)
	}
	h.Add(trained(3, 0.5, 4))
	h.Add(skipped(4))
	h.Add(trained(5, 0.25, 8)) // full: 2 and 3 merge
	want := []struct {
		step, count, skipped int64
		loss, min, max, grad float64
	}{{1, 1, 0, 1, 1, 1, 2}, {3, 2, 1, 0.5, 0.5, 0.5, 4}, {4, 1, 1, 0, 0, 0, 0}, {5, 1, 0, 0.25, 0.25, 0.25, 8}}
	check := func(when string) {
		t.Helper()
		if len(h.Points) != len(want) {
			t.Fatalf("%s: %d points %+v, want %d", when, len(h.Points), h.Points, len(want))
		}
		for i, w := range want {
			p := h.Points[i]
			if p.Step != w.step || p.Count != w.count || p.Skipped != w.skipped || p.Loss != w.loss || p.LossMin != w.min ||
				p.LossMax != w.max || p.GradNorm != w.grad || p.HasLoss() != (w.count > w.skipped) {
				t.Errorf("%s: point %d = %+v, want %+v", when, i, p, w)
			}
		}
	}
	check("after the first merge")
	if p := h.Points[1]; p.LR != 0.2 || p.LossQuartiles != [4]float64{0.5, 0.5, 0.5, 0.5} || p.QuartilesMissing != [4]int64{1, 1, 1, 1} {
		t.Errorf("merged 2-3: lr %v (want the mean over both, 0.2), quartiles %v missing %v", p.LR, p.LossQuartiles, p.QuartilesMissing)
	}
	h.Add(skipped(6))            // full: 2-3 and 4 merge (only skipped on one side)
	h.Add(trained(7, 0.125, 16)) // full: 2-4 and 5 merge
	want = []struct {
		step, count, skipped int64
		loss, min, max, grad float64
	}{{1, 1, 0, 1, 1, 1, 2}, {5, 4, 2, 0.375, 0.25, 0.5, 6}, {6, 1, 1, 0, 0, 0, 0}, {7, 1, 0, 0.125, 0.125, 0.125, 16}}
	check("after three merges")

	// Two points of skipped steps only merge into one without a loss.
	m := merge(h.Points[2], LossPoint{Step: 8, Count: 1, Skipped: 1, LR: 0.5, QuartilesMissing: [4]int64{1, 1, 1, 1}})
	if m.Count != 2 || m.Skipped != 2 || m.HasLoss() || m.Loss != 0 || m.GradNorm != 0 || m.LR != 0.4 {
		t.Errorf("merged skipped points %+v", m)
	}

	// Snapshots carry the mark; a point of rules 1 (no "skipped") reads as trained.
	var back LossHistory
	if err := json.Unmarshal(must(json.Marshal(h)), &back); err != nil || back.Points[2].Skipped != 1 || back.Points[1].Skipped != 2 {
		t.Fatalf("round trip: %+v, %v", back.Points, err)
	}
	var old LossPoint
	if err := json.Unmarshal([]byte(`{"step":3,"count":2,"loss":0.5}`), &old); err != nil || old.Skipped != 0 || !old.HasLoss() {
		t.Fatalf("rules-1 point %+v, %v", old, err)
	}
}

// TestSkippedProgressApplies: rank 0's report of a skipped step becomes a skipped point (its
// loss, quartiles and gradient norm not asked to be finite, since they are not recorded), while
// a skipped report whose other metrics are not finite is still left out with an event.
func TestSkippedProgressApplies(t *testing.T) {
	s := New()
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: mnistRun(t)}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "a:1"}})
	for _, c := range []Command{
		{Kind: KindProgress, Time: 3, Progress: &Progress{ID: "a", Generation: 1, Step: 1, Point: LossPoint{Loss: 0.5, GradNorm: 1, LR: 1e-4}}},
		{Kind: KindProgress, Time: 4, Progress: &Progress{ID: "a", Generation: 1, Step: 2, Point: LossPoint{Skipped: 1, Loss: math.Inf(1), GradNorm: math.NaN(), LR: 2e-4}}},
		{Kind: KindProgress, Time: 5, Progress: &Progress{ID: "a", Generation: 1, Step: 3, Point: LossPoint{Skipped: 1, LR: math.NaN()}}},
	} {
		if r := Apply(s, c); r.Err() != nil {
			t.Fatalf("step %d: %v", c.Progress.Step, r.Err())
		}
	}
	if n := len(s.Loss.Points); n != 2 {
		t.Fatalf("%d points %+v, want 2", n, s.Loss.Points)
	}
	if p := s.Loss.Points[1]; p.Step != 2 || p.Time != 4 || p.Skipped != 1 || p.HasLoss() || p.Loss != 0 || p.GradNorm != 0 || p.LR != 2e-4 {
		t.Errorf("skipped point %+v", p)
	}
	if e := s.Events[len(s.Events)-1]; e.Text != "non-finite metrics at step 3 not recorded" || s.Step != 3 {
		t.Errorf("last event %+v, step %d", e, s.Step)
	}
	if _, err := Decode(s.Encode()); err != nil {
		t.Fatal(err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestTrainedImagesPerSec: a merged point's ImagesPerSec stays the mean over all its reports
// (the replicated state as every release computes it), in which a skipped step counts 0; its
// TrainedImagesPerSec is the mean over the trained ones: of 64 and 96 images/s and two skipped
// steps, 40 in the state and 80 read. A point of skipped steps only has none (NaN); a point
// without skipped steps reads as stored.
func TestTrainedImagesPerSec(t *testing.T) {
	h := NewLossHistory(6)
	for s, ips := range []float64{10, 64, 0, 96, 0, 10, 10, 10, 10} {
		h.Add(LossPoint{Step: int64(s + 1), ImagesPerSec: ips, Skipped: map[bool]int64{true: 1}[ips == 0]})
	}
	// Steps 2-3 and 4-5 merged at step 7, then those two at step 9.
	if p := h.Points[1]; p.Step != 5 || p.Count != 4 || p.Skipped != 2 || p.ImagesPerSec != 40 || p.TrainedImagesPerSec() != 80 {
		t.Errorf("merged point %+v: trained images/s %v, want 40 stored and 80 read", p, p.TrainedImagesPerSec())
	}
	if p := h.Points[2]; p.Step != 7 || p.Count != 2 || p.Skipped != 0 || p.TrainedImagesPerSec() != 10 {
		t.Errorf("point without skipped steps %+v: trained images/s %v, want 10", p, p.TrainedImagesPerSec())
	}
	if p := (LossPoint{Step: 3, Count: 2, Skipped: 2}); !math.IsNaN(p.TrainedImagesPerSec()) {
		t.Errorf("skipped steps only: %v, want NaN", p.TrainedImagesPerSec())
	}
}
