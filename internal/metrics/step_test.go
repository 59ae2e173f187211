package metrics_test

import (
	"math"
	"testing"

	"ddpm/internal/metrics"
)

func TestQuartiles(t *testing.T) {
	const T = 1000
	// Two ranks' shares of one global batch; quartile boundaries at 250, 500, 750.
	rank0, rank1 := make([]float32, metrics.QuartileSlots), make([]float32, metrics.QuartileSlots)
	metrics.AddQuartiles(rank0, []float64{1, 2, 4}, []int32{0, 249, 250}, T)
	metrics.AddQuartiles(rank1, []float64{8, 0.5}, []int32{999, 749}, T)
	sum := make([]float32, metrics.QuartileSlots)
	for i := range sum {
		sum[i] = rank0[i] + rank1[i] // what the all-reduce leaves on every rank
	}
	got := metrics.QuartileMeans(sum)
	want := [4]float64{1.5, 4, 0.5, 8}
	if got != want {
		t.Fatalf("quartile means %v, want %v", got, want)
	}
	empty := metrics.QuartileMeans(make([]float32, metrics.QuartileSlots))
	for q, v := range empty {
		if !math.IsNaN(v) {
			t.Errorf("empty quartile %d = %v, want NaN", q, v)
		}
	}
	for _, bad := range []func(){
		func() { metrics.AddQuartiles(make([]float32, 7), nil, nil, T) },
		func() { metrics.AddQuartiles(make([]float32, 8), []float64{1}, []int32{T}, T) },
		func() { metrics.AddQuartiles(make([]float32, 8), []float64{1}, nil, T) },
		func() { metrics.QuartileMeans(make([]float32, 3)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic on bad arguments")
				}
			}()
			bad()
		}()
	}
}

func TestBusBW(t *testing.T) {
	// nccl-tests: 4 ranks, 1 GB in 0.5 s: algbw 2 GB/s, busbw 2 * 2*3/4 = 3 GB/s.
	if got := metrics.BusBW(1e9, 0.5, 4); got != 3e9 {
		t.Errorf("busbw %v, want 3e9", got)
	}
	if metrics.BusBW(1e9, 0.5, 1) != 0 || metrics.BusBW(1e9, 0, 4) != 0 {
		t.Error("busbw of a world of one or of no time should be 0")
	}
}
