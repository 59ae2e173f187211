package main

import (
	"math"
	"testing"
)

// TestMeanSE: the standard error of eval bpd's mean uses the sample standard deviation (n-1):
// for the per-image totals 1.6839 and 2.0247 of a fresh user's run it is |a-b|/2 = 0.1704 (the
// population deviation gave 0.1205), and for one value there is none (NaN; it printed ± 0).
func TestMeanSE(t *testing.T) {
	m, se := meanSE([]float64{1.6839, 2.0247})
	if math.Abs(m-1.8543) > 1e-12 || math.Abs(se-0.1704) > 1e-12 {
		t.Fatalf("mean %v se %v, want 1.8543 and 0.1704", m, se)
	}
	// 1, 2, 3, 4: mean 2.5, sample variance 5/3, se sqrt(5/3)/2.
	if m, se := meanSE([]float64{1, 2, 3, 4}); m != 2.5 || math.Abs(se-math.Sqrt(5.0/3)/2) > 1e-15 {
		t.Fatalf("mean %v se %v", m, se)
	}
	if m, se := meanSE([]float64{1.5}); m != 1.5 || !math.IsNaN(se) {
		t.Fatalf("one value: mean %v se %v, want 1.5 and NaN", m, se)
	}
}
