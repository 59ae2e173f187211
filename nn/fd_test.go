package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Finite-difference checks run in float64: with central differences and step fdStep the
// truncation error is O(fdStep^2) ~ 1e-10 and the rounding error ~ 1e-16/fdStep ~ 1e-11 relative
// to the loss, so analytic and numeric gradients must agree to fdTol (relative, with an absolute
// floor of fdTol for gradients near zero). A wrong index, sign or factor misses by far more.
const (
	fdStep = 1e-5
	fdTol  = 1e-6
)

func randSlice(r *rand.Rand, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = r.NormFloat64()
	}
	return s
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// dot is the test loss L = sum(y .* r).
func dot(y, r []float64) float64 {
	var s float64
	for i := range y {
		s += y[i] * r[i]
	}
	return s
}

// checkFD perturbs every element of v (or at most 200 spread-out ones), recomputes the loss with
// loss(), and compares the central difference with want[i].
func checkFD(t *testing.T, what string, v, want []float64, loss func() float64) {
	t.Helper()
	if len(v) != len(want) {
		t.Fatalf("%s: %d values, %d gradients", what, len(v), len(want))
	}
	step := 1
	if len(v) > 200 {
		step = len(v)/200 + 1
	}
	bad := 0
	for i := 0; i < len(v); i += step {
		old := v[i]
		v[i] = old + fdStep
		lp := loss()
		v[i] = old - fdStep
		lm := loss()
		v[i] = old
		num := (lp - lm) / (2 * fdStep)
		if d := math.Abs(num - want[i]); d > fdTol*math.Max(1, math.Abs(num)) {
			if bad++; bad <= 5 {
				t.Errorf("%s[%d]: analytic %.10g, numeric %.10g", what, i, want[i], num)
			}
		}
	}
}

func copyOf(s []float64) []float64 { return append([]float64(nil), s...) }

func fillParams(r *rand.Rand, a *Arena[float64]) {
	for i := range a.Data() {
		a.Data()[i] = r.NormFloat64() * 0.5
	}
	clear0(a.Grad())
}
