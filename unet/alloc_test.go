package unet

import (
	"runtime"
	"testing"

	"ddpm/nn"
)

// TestStepAllocs checks that once the buffers exist, a training-mode Forward and Backward
// allocate nothing on the heap, on one core and on two (where the layers' parallel loops and the
// split GEMMs run on the worker pool) — except the one allocation of
// diffusion.TimestepEmbedding, which makes its frequency table per call (diffusion's code).
//
// The claim holds for the engine's own GEMM (the default build, OpenBLAS or not); with the purego
// tag or without cgo, GEMMs run on gonum's pure-Go Sgemm, which allocates its block buffers and
// goroutines per call (about 1,700 allocations a step for this model), so the test is skipped
// there rather than asserting a figure of gonum's.
func TestStepAllocs(t *testing.T) {
	if nn.Backend == "gonum" {
		t.Skipf("GEMMs run on gonum's pure-Go Sgemm (build tag purego or no cgo), which allocates per call")
	}
	cfg := small16()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(0)
	const b = 4
	x, dy := randomBatch(cfg, b, 1)
	ts := []int32{0, 250, 500, 999}
	key := &DropoutKey{Seed: 1, Positions: []uint64{0, 1, 2, 3}}
	for _, procs := range []int{1, 2} {
		old := runtime.GOMAXPROCS(procs)
		allocs := testing.AllocsPerRun(3, func() {
			m.Forward(x, ts, b, key)
			m.ZeroGrads()
			m.Backward(dy)
		})
		runtime.GOMAXPROCS(old)
		if allocs != 0 {
			t.Errorf("GOMAXPROCS=%d: %.0f heap allocations per Forward+Backward, want 0", procs, allocs)
		}
	}
}
