package main

import (
	"math"
	"testing"
)

// TestLocalETARounded: the progress bar's ETA is whole seconds, and days and hours from a day
// on; the bar's own prediction printed [11s:601620h1m52.290448384s] for --steps 100000000000.
func TestLocalETARounded(t *testing.T) {
	for _, c := range []struct {
		sec  float64
		want string
	}{
		{0, "0s"}, {-3, "0s"}, {math.NaN(), "0s"}, {0.4, "0s"}, {41.6, "42s"},
		{3712.290448384, "1h1m52s"}, {86399.4, "23h59m59s"}, {86400, "1d0h"},
		{601620*3600 + 112.290448384, "25067d12h"}, {1e20, "1157407407407407d8h"},
	} {
		if got := etaString(c.sec); got != c.want {
			t.Errorf("etaString(%v) = %q, want %q", c.sec, got, c.want)
		}
	}
}
