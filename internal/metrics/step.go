package metrics

import (
	"fmt"
	"math"
)

// QuartileSlots is how many float32 entries AddQuartiles uses at the end of a trainer's
// all-reduce buffer: the loss sum of each timestep quartile, then the sample count of each.
const QuartileSlots = 8

// AddQuartiles adds every sample's loss to the sum of its timestep quartile and counts it:
// dst[q] += perSample[i] and dst[4+q] += 1 with q = floor(4*t[i]/T), as improved-diffusion's
// logger buckets the loss. After an all-reduce (sum) of dst over the ranks, QuartileMeans gives
// the global means. It panics if len(dst) < QuartileSlots, len(t) != len(perSample), T < 1 or
// some t[i] is outside [0, T).
func AddQuartiles(dst []float32, perSample []float64, t []int32, T int) {
	if len(dst) < QuartileSlots || len(t) != len(perSample) || T < 1 {
		panic(fmt.Sprintf("metrics: AddQuartiles with len(dst)=%d, %d losses, %d timesteps, T=%d", len(dst), len(perSample), len(t), T))
	}
	for i, l := range perSample {
		if t[i] < 0 || int(t[i]) >= T {
			panic(fmt.Sprintf("metrics: AddQuartiles: t[%d]=%d outside [0, %d)", i, t[i], T))
		}
		q := 4 * int(t[i]) / T
		dst[q] += float32(l)
		dst[4+q]++
	}
}

// QuartileMeans returns the mean loss of each timestep quartile from sums and counts laid out
// as AddQuartiles writes them; a quartile without samples is NaN. It panics if
// len(src) < QuartileSlots.
func QuartileMeans(src []float32) [4]float64 {
	if len(src) < QuartileSlots {
		panic(fmt.Sprintf("metrics: QuartileMeans with len(src)=%d", len(src)))
	}
	var m [4]float64
	for q := range m {
		if src[4+q] == 0 {
			m[q] = math.NaN()
			continue
		}
		m[q] = float64(src[q]) / float64(src[4+q])
	}
	return m
}

// BusBW is the all-reduce's bus bandwidth in bytes/s as nccl-tests define it: algbw * 2(N-1)/N
// with algbw = bytes/seconds. It is 0 for a world of one (nothing crosses a link) or a
// non-positive duration.
func BusBW(bytes int, seconds float64, world int) float64 {
	if world <= 1 || seconds <= 0 {
		return 0
	}
	return float64(bytes) / seconds * 2 * float64(world-1) / float64(world)
}
