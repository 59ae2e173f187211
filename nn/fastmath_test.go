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
