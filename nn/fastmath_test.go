package nn

import (
	"math"
	"testing"
)

// TestExpf compares expf with the correctly rounded float32 of math.Exp over [-87, 88] on a
// dense grid and at the range ends: within expfULP units in the last place.
func TestExpf(t *testing.T) {
	const expfULP = 2
	check := func(x float32) {
		want := float32(math.Exp(float64(x)))
		got := expf(x)
		ulp := math.Nextafter32(want, float32(math.Inf(1))) - want
		if d := math.Abs(float64(got - want)); d > expfULP*float64(ulp) {
			t.Fatalf("expf(%g) = %g, want %g (%.1f ulp)", x, got, want, d/float64(ulp))
		}
	}
	for x := float32(-87); x <= 88; x += 0.000731 {
		check(x)
	}
	for _, x := range []float32{-87, -1e-7, 0, 1e-7, 0.5 * math.Ln2, -0.5 * math.Ln2, 88} {
		check(x)
	}
	if got, want := expf(-100), expf(-87); got != want || got > 2e-38 {
		t.Errorf("expf(-100) = %g, want expf(-87) = %g", got, want)
	}
	if got, want := expf(100), expf(88); got != want || got < 1e38 {
		t.Errorf("expf(100) = %g, want expf(88) = %g", got, want)
	}
	if got := expf(float32(math.NaN())); got == got {
		t.Errorf("expf(NaN) = %g, want NaN", got)
	}
	if got := expT(1.0); got != math.E {
		t.Errorf("expT[float64](1) = %.17g, want math.E", got)
	}
}

// TestVectorRowsMatchScalar checks that siluRow32 and expShiftRow32, whose first len/16*16
// elements run in vecf32's AVX-512 loops, give the scalar loops' exact bits, over arguments
// that cover the clamps (|z| past 87) and lengths with and without a tail.
func TestVectorRowsMatchScalar(t *testing.T) {
	for _, n := range []int{0, 5, 16, 37, 1000} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32((i*7919)%2001-1000) * 0.11 // [-110, 110]
		}
		y, sig := make([]float32, n), make([]float32, n)
		wy, wsig := make([]float32, n), make([]float32, n)
		siluRow32(y, sig, x, 0.93, -0.21)
		siluRowScalar(wy, wsig, x, 0.93, -0.21)
		for i := range x {
			if math.Float32bits(y[i]) != math.Float32bits(wy[i]) || math.Float32bits(sig[i]) != math.Float32bits(wsig[i]) {
				t.Fatalf("n %d: siluRow32 at x = %g: y %g sig %g, scalar y %g sig %g", n, x[i], y[i], sig[i], wy[i], wsig[i])
			}
		}
		row, want := append([]float32(nil), x...), append([]float32(nil), x...)
		expShiftRow32(row, 3.5)
		expShiftRowScalar(want, 3.5)
		for i := range row {
			if math.Float32bits(row[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n %d: expShiftRow32 at v = %g: %g, scalar %g", n, x[i], row[i], want[i])
			}
		}
	}
}
