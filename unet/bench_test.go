package unet

import (
	"testing"

	"ddpm/internal/rng"
)

// benchStep runs forward + backward of preset at batch b (the GEMM-heavy part of a train step).
func benchStep(bm *testing.B, preset string, b int) {
	cfg, _ := Preset(preset)
	m, err := New(cfg)
	if err != nil {
		bm.Fatal(err)
	}
	m.Init(0)
	d := cfg.InCh * cfg.Resolution * cfg.Resolution
	x := make([]float32, b*d)
	src := rng.New(1, 1)
	src.FillNormal(x)
	ts := make([]int32, b)
	pos := make([]uint64, b)
	for i := range ts {
		ts[i] = int32(i * 997 % 1000)
		pos[i] = uint64(i)
	}
	key := &DropoutKey{Seed: 1, Positions: pos}
	dy := make([]float32, b*cfg.OutCh*cfg.Resolution*cfg.Resolution)
	src.FillNormal(dy)
	m.Forward(x, ts, b, key)
	m.Backward(dy)
	bm.ResetTimer()
	for range bm.N {
		m.Forward(x, ts, b, key)
		m.Backward(dy)
	}
}

func BenchmarkTrainStepSmallB16(b *testing.B) { benchStep(b, "small", 16) }
func BenchmarkTrainStepTinyB16(b *testing.B)  { benchStep(b, "tiny", 16) }

// benchForward runs the evaluation-mode forward pass of preset at batch b (a sampling step's
// network evaluation).
func benchForward(bm *testing.B, preset string, b int) {
	cfg, _ := Preset(preset)
	m, err := New(cfg)
	if err != nil {
		bm.Fatal(err)
	}
	m.Init(0)
	x := make([]float32, b*cfg.InCh*cfg.Resolution*cfg.Resolution)
	rng.New(1, 1).FillNormal(x)
	ts := make([]int32, b)
	for i := range ts {
		ts[i] = int32(i * 997 % 1000)
	}
	m.Forward(x, ts, b, nil)
	bm.ResetTimer()
	for range bm.N {
		m.Forward(x, ts, b, nil)
	}
}

func BenchmarkForwardTinyB16(b *testing.B)  { benchForward(b, "tiny", 16) }
func BenchmarkForwardSmallB16(b *testing.B) { benchForward(b, "small", 16) }

func BenchmarkForwardCIFAR10B8(b *testing.B) { benchForward(b, "cifar10", 8) }

func BenchmarkTrainStepCIFAR10B8(b *testing.B) { benchStep(b, "cifar10", 8) }
