package fsm

import "math"

// DefaultLossCapacity is the number of points the loss history keeps.
const DefaultLossCapacity = 1024

// LossPoint is one point of the down-sampled training history. A point stands for Count merged
// reports: the float fields are their count-weighted means, LossMin and LossMax their extremes,
// Step and Time those of the newest report merged in. Skipped of them were steps skipped for a
// non-finite gradient, which have no loss: Loss, LossMin, LossMax, GradNorm and LossQuartiles
// cover the other Count-Skipped reports only (all 0 when there are none; see HasLoss), while LR,
// ImagesPerSec and the times cover all Count. A skipped report's ImagesPerSec is 0 (its trainer
// trained no image and the coordinators record 0), so ImagesPerSec reads low where steps were
// skipped: read the throughput through TrainedImagesPerSec.
type LossPoint struct {
	Step  int64 `json:"step"`
	Time  int64 `json:"time"` // Unix ns
	Count int64 `json:"count"`
	// Skipped counts the merged reports of steps skipped for a non-finite gradient (no rank
	// updated the parameters; api ReportProgressRequest.skipped). Absent from points of rules
	// version 1 (see RulesVersion), which never recorded such a step.
	Skipped int64 `json:"skipped,omitempty"`
	// Loss is the global L_simple (the all-reduced mean over the global batch).
	Loss    float64 `json:"loss"`
	LossMin float64 `json:"loss_min"`
	LossMax float64 `json:"loss_max"`
	// LossQuartiles is L_simple by timestep quartile t in [0,T/4), [T/4,T/2), [T/2,3T/4), [3T/4,T):
	// the mean over the merged reports that had a sample in the quartile.
	LossQuartiles [4]float64 `json:"loss_quartiles"`
	// QuartilesMissing counts, per quartile, the merged reports without a sample in it (a small
	// batch can leave a quarter of [0, T) empty); see HasQuartile.
	QuartilesMissing [4]int64 `json:"quartiles_missing"`
	GradNorm         float64  `json:"grad_norm"` // before clipping
	LR               float64  `json:"lr"`
	ImagesPerSec     float64  `json:"images_per_sec"`
	ComputeSec       float64  `json:"compute_sec"`   // per step
	AllReduceSec     float64  `json:"allreduce_sec"` // per step
	WaitSec          float64  `json:"wait_sec"`      // per step
	BusBW            float64  `json:"busbw"`         // all-reduce bus bandwidth, bytes/s
}

// HasQuartile reports whether any report merged into p had a sample in timestep quartile q
// (0..3), i.e. whether LossQuartiles[q] means anything.
func (p LossPoint) HasQuartile(q int) bool { return p.QuartilesMissing[q] < max(p.Count, 1) }

// HasLoss reports whether any report merged into p was a trained step (not skipped), i.e.
// whether Loss, LossMin, LossMax and GradNorm mean anything.
func (p LossPoint) HasLoss() bool { return p.Skipped < max(p.Count, 1) }

// TrainedImagesPerSec is the throughput over the trained (not skipped) reports merged into p, in
// images per second: the mean of their ImagesPerSec. ImagesPerSec is the Count-weighted mean over
// all of them in which each skipped report counts 0, so this is ImagesPerSec * Count / (Count -
// Skipped), derived when read so that the replicated state stays as the rules of every release
// compute it (equal to the trained-only mean up to float64 rounding, exactly so where the merge
// weights are powers of two). NaN when p has no trained report (see HasLoss); ImagesPerSec itself
// for a point without a count (none is stored so).
func (p LossPoint) TrainedImagesPerSec() float64 {
	switch {
	case !p.HasLoss():
		return math.NaN()
	case p.Skipped <= 0 || p.Count <= 0:
		return p.ImagesPerSec
	}
	return p.ImagesPerSec * float64(p.Count) / float64(p.Count-p.Skipped)
}

// LossHistory is a bounded history: when it is full, neighbouring points merge pairwise, except
// the first and the newest, so it always spans the whole run, keeps the first and last points
// exactly and keeps every minimum and maximum of the loss in LossMin and LossMax.
type LossHistory struct {
	Capacity int         `json:"capacity"`
	Points   []LossPoint `json:"points"`
}

// NewLossHistory returns an empty history of the given capacity; it panics if capacity < 4.
func NewLossHistory(capacity int) LossHistory {
	if capacity < 4 {
		panic("fsm: loss history capacity must be at least 4")
	}
	return LossHistory{Capacity: capacity}
}

// Add appends p (Count 1, LossMin = LossMax = Loss are set here). A p with Skipped non-zero
// is one skipped step: it is stored with Skipped 1 and without a loss (Loss, GradNorm and the
// quartiles 0, every quartile missing), whatever p held there. A point whose step is not
// after the newest point's means the run went back (a new generation restarted from a
// checkpoint): the points at or after that step are dropped first, so the history follows the
// trajectory the run actually took.
func (h *LossHistory) Add(p LossPoint) { h.add(p, false) }

// AddEven is Add under rules 3 and later (RulesVersion): a full history compacts by
// compactEven, which keeps the spans of the merged points within a small factor of one another,
// where Add's compact doubles the oldest ones at every compaction (after 800000 reports into 1024
// points, one point covered 99.4% of the run).
func (h *LossHistory) AddEven(p LossPoint) { h.add(p, true) }

func (h *LossHistory) add(p LossPoint, even bool) {
	if p.Skipped != 0 {
		p.Skipped, p.Loss, p.GradNorm = 1, 0, 0
		p.LossQuartiles, p.QuartilesMissing = [4]float64{}, [4]int64{1, 1, 1, 1}
	}
	p.Count, p.LossMin, p.LossMax = 1, p.Loss, p.Loss
	for len(h.Points) > 0 && h.Points[len(h.Points)-1].Step >= p.Step {
		h.Points = h.Points[:len(h.Points)-1]
	}
	if h.Capacity < 4 {
		h.Capacity = DefaultLossCapacity
	}
	if len(h.Points) >= h.Capacity {
		if even {
			h.compactEven()
		} else {
			h.compact()
		}
	}
	h.Points = append(h.Points, p)
}

// Truncate drops the points of steps after step (a rollback abandoned them; the recomputed
// steps report theirs). A merged point is kept or dropped by its Step, as Add does.
func (h *LossHistory) Truncate(step int64) {
	for len(h.Points) > 0 && h.Points[len(h.Points)-1].Step > step {
		h.Points = h.Points[:len(h.Points)-1]
	}
}

// compact merges points 1-2, 3-4, ... keeping the first and the last point as they are.
func (h *LossHistory) compact() {
	ps := h.Points
	out := ps[:1]
	i := 1
	for ; i+1 < len(ps)-1; i += 2 {
		out = append(out, merge(ps[i], ps[i+1]))
	}
	for ; i < len(ps); i++ {
		out = append(out, ps[i])
	}
	h.Points = out
}

// compactEven makes as many merges as compact, each of two neighbouring points of the smallest
// combined Count, keeping the first and the last point as they are: in passes from the oldest
// point, each merging the neighbours whose combined Count is the smallest there is (the oldest
// such pairs first), until the merges are made. Points of equal counts merge pairwise from the
// oldest, exactly as compact merges them; otherwise the points of the smallest spans merge first,
// so a point's span stays within a small factor of steps/Capacity however long the run.
func (h *LossHistory) compactEven() {
	ps := h.Points
	merges := (len(ps) - 2) / 2
	for merges > 0 {
		target := int64(math.MaxInt64)
		for i := 1; i+1 < len(ps)-1; i++ {
			target = min(target, ps[i].Count+ps[i+1].Count)
		}
		out := make([]LossPoint, 0, len(ps))
		out = append(out, ps[0])
		i := 1
		for i < len(ps)-1 {
			if merges > 0 && i+1 < len(ps)-1 && ps[i].Count+ps[i+1].Count <= target {
				out = append(out, merge(ps[i], ps[i+1]))
				i += 2
				merges--
				continue
			}
			out = append(out, ps[i])
			i++
		}
		ps = append(out, ps[len(ps)-1])
	}
	h.Points = ps
}

// merge combines a and the newer b.
func merge(a, b LossPoint) LossPoint {
	n := float64(a.Count + b.Count)
	wa, wb := float64(a.Count)/n, float64(b.Count)/n
	mean := func(x, y float64) float64 { return wa*x + wb*y }
	m := b
	m.Count, m.Skipped = a.Count+b.Count, a.Skipped+b.Skipped
	// The loss and the gradient norm over the trained (not skipped) reports only.
	ta, tb := float64(a.Count-a.Skipped), float64(b.Count-b.Skipped)
	switch {
	case ta == 0:
		m.Loss, m.LossMin, m.LossMax, m.GradNorm = b.Loss, b.LossMin, b.LossMax, b.GradNorm
	case tb == 0:
		m.Loss, m.LossMin, m.LossMax, m.GradNorm = a.Loss, a.LossMin, a.LossMax, a.GradNorm
	default:
		m.Loss = ta/(ta+tb)*a.Loss + tb/(ta+tb)*b.Loss
		m.GradNorm = ta/(ta+tb)*a.GradNorm + tb/(ta+tb)*b.GradNorm
		m.LossMin = math.Min(a.LossMin, b.LossMin)
		m.LossMax = math.Max(a.LossMax, b.LossMax)
	}
	// Each quartile over the reports that had it (the same weights as the other fields when
	// none lacked it).
	for q := range m.LossQuartiles {
		na, nb := float64(a.Count-a.QuartilesMissing[q]), float64(b.Count-b.QuartilesMissing[q])
		m.QuartilesMissing[q] = a.QuartilesMissing[q] + b.QuartilesMissing[q]
		m.LossQuartiles[q] = 0
		if na+nb > 0 {
			m.LossQuartiles[q] = na/(na+nb)*a.LossQuartiles[q] + nb/(na+nb)*b.LossQuartiles[q]
		}
	}
	m.LR = mean(a.LR, b.LR)
	m.ImagesPerSec = mean(a.ImagesPerSec, b.ImagesPerSec)
	m.ComputeSec = mean(a.ComputeSec, b.ComputeSec)
	m.AllReduceSec = mean(a.AllReduceSec, b.AllReduceSec)
	m.WaitSec = mean(a.WaitSec, b.WaitSec)
	m.BusBW = mean(a.BusBW, b.BusBW)
	return m
}
