package unet

import (
	"math"
	"runtime"
	"testing"
)

// TestStepBitsIndependentOfThreads checks that a training-mode Forward and Backward give the
// same bits on one CPU and on two, and twice in a row: the engine's parallel loops and split
// GEMMs must not change any sum's order. The batch of 5 makes uneven sample groups at every
// level of the 16x16 model.
func TestStepBitsIndependentOfThreads(t *testing.T) {
	cfg := small16()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(3)
	const b = 5
	x, dy := randomBatch(cfg, b, 2)
	ts := []int32{0, 250, 500, 750, 999}
	key := &DropoutKey{Seed: 4, Positions: []uint64{10, 11, 12, 13, 14}}
	run := func(procs int) (out, grads []float32) {
		old := runtime.GOMAXPROCS(procs)
		defer runtime.GOMAXPROCS(old)
		out = append([]float32(nil), m.Forward(x, ts, b, key)...)
		m.ZeroGrads()
		m.Backward(dy)
		return out, append([]float32(nil), m.Grads()...)
	}
	out1, g1 := run(1)
	for _, procs := range []int{2, 2, 1} {
		out, g := run(procs)
		for i := range out {
			if math.Float32bits(out[i]) != math.Float32bits(out1[i]) {
				t.Fatalf("GOMAXPROCS=%d: output[%d] = %g, on one CPU %g", procs, i, out[i], out1[i])
			}
		}
		for i := range g {
			if math.Float32bits(g[i]) != math.Float32bits(g1[i]) {
				t.Fatalf("GOMAXPROCS=%d: gradient[%d] = %g, on one CPU %g", procs, i, g[i], g1[i])
			}
		}
	}
}

// TestInferenceForwardBitIdentical checks that a Forward in inference mode (SetInference, the
// shared GroupNorm buffer, no kept sigmoids) gives the same bits as a training-use Forward, with
// and without dropout, on one CPU and on two; that Backward then panics; and that switching back
// gives the same training step as a model that never ran in inference mode, whose gradients a
// later Init clears.
func TestInferenceForwardBitIdentical(t *testing.T) {
	cfg := small16()
	cfg.Dropout = 0.1
	build := func() *Model {
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(5)
		return m
	}
	ref, m := build(), build()
	const b = 3
	x, dy := randomBatch(cfg, b, 6)
	ts := []int32{0, 400, 999}
	key := &DropoutKey{Seed: 7, Positions: []uint64{1, 2, 3}}
	same := func(what string, got, want []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: [%d] = %g, training-use Forward %g", what, i, got[i], want[i])
			}
		}
	}
	for _, k := range []*DropoutKey{nil, key} {
		want := append([]float32(nil), ref.Forward(x, ts, b, k)...)
		m.SetInference(true)
		for _, procs := range []int{1, 2} {
			old := runtime.GOMAXPROCS(procs)
			got := m.Forward(x, ts, b, k)
			runtime.GOMAXPROCS(old)
			same("inference Forward", got, want)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Backward after an inference-mode Forward did not panic")
			}
		}()
		m.Backward(dy)
	}()
	m.SetInference(false)
	for _, n := range []*Model{ref, m} {
		n.Forward(x, ts, b, key)
		n.ZeroGrads()
		n.Backward(dy)
	}
	same("gradients after SetInference(false)", m.Grads(), ref.Grads())
	m.Init(5) // after a Backward, Init must clear the gradients it skips on a fresh model
	for i, v := range m.Grads() {
		if v != 0 {
			t.Fatalf("gradient[%d] = %g after Init", i, v)
		}
	}
	same("parameters after a second Init", m.Params(), build().Params())
}
