package fsm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestReviewTrainedImagesPerSecMatchesReports: 3000 step reports of varied throughput (each
// report's images/s drawn from 10..1000), about a third of them skipped (images/s 0, as the
// leader records them), go through a 16-point LossHistory that compacts many times over, with a
// rollback of 200 steps on the way. For every point the history keeps, TrainedImagesPerSec must
// equal the plain mean of the images/s of the trained reports the point covers (the steps after
// the previous point's, up to its own), within 1e-12 relative, and be NaN exactly where the point
// covers skipped reports only. The point's stored ImagesPerSec (a skipped report counted as 0)
// is the mean over all its reports: it differs from the trained-only mean wherever a covered
// report was skipped, which the test also checks, so the derived reading is what changes.
func TestReviewTrainedImagesPerSecMatchesReports(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	h := NewLossHistory(16)
	ips := map[int64]float64{} // step -> reported images/s (0: skipped)
	var seq []int64            // the steps reported, in order, those a rollback abandoned removed
	add := func(step int64) {
		seq = append(seq, step)
		skipped := r.IntN(3) == 0
		v := 0.0
		if !skipped {
			v = 10 + 990*r.Float64()
		}
		ips[step] = v
		p := LossPoint{Step: step, ImagesPerSec: v, Loss: 0.5, LR: 1e-4}
		if skipped {
			p.Skipped = 1
		}
		h.Add(p)
	}
	for s := int64(1); s <= 1500; s++ {
		add(s)
	}
	// A rollback: steps after 1300 are computed again (new reports replace them).
	h.Truncate(1300)
	for len(seq) > 0 && seq[len(seq)-1] > 1300 {
		seq = seq[:len(seq)-1]
	}
	for s := int64(1301); s <= 3000; s++ {
		add(s)
	}
	// A point covers the Count reports of seq that end at its step (a merge joins neighbours; a
	// merged point that a rollback dropped leaves a gap between points, never inside one).
	pos := map[int64]int{}
	for i, s := range seq {
		pos[s] = i
	}
	differs := 0
	for i, p := range h.Points {
		end, ok := pos[p.Step]
		if !ok || int64(end+1) < p.Count {
			t.Fatalf("point %d (step %d, count %d) is not a span of the reports", i, p.Step, p.Count)
		}
		var sum float64
		var trained, all int64
		for _, s := range seq[end+1-int(p.Count) : end+1] {
			all++
			if ips[s] != 0 {
				sum += ips[s]
				trained++
			}
		}
		got := p.TrainedImagesPerSec()
		if trained == 0 {
			if !math.IsNaN(got) {
				t.Errorf("point %d (step %d): skipped reports only, TrainedImagesPerSec %v, want NaN", i, p.Step, got)
			}
			continue
		}
		want := sum / float64(trained)
		if math.Abs(got-want) > 1e-12*want {
			t.Errorf("point %d (step %d, count %d, skipped %d): TrainedImagesPerSec %.15g, trained-only mean %.15g", i, p.Step, p.Count, p.Skipped, got, want)
		}
		if trained < all && math.Abs(p.ImagesPerSec-want) > 1e-6*want {
			differs++
		}
	}
	if differs == 0 {
		t.Errorf("no point's stored images/s differs from its trained-only mean: the test covers no skipped report")
	}
}
