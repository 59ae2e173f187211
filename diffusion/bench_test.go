package diffusion

import (
	"testing"

	"ddpm/internal/rng"
)

// CIFAR-10 sized batch: B = 128, D = 3*32*32.
const benchB, benchD = 128, 3 * 32 * 32

func benchInputs(b *testing.B) (*Schedule, []float32, []float32, []int32) {
	s := mustSchedule(b, DefaultScheduleConfig())
	x := make([]float32, benchB*benchD)
	eps := make([]float32, benchB*benchD)
	src := rng.New(1, 1)
	src.FillNormal(x)
	src.FillNormal(eps)
	t := make([]int32, benchB)
	for i := range t {
		t[i] = int32(src.Intn(s.T()))
	}
	return s, x, eps, t
}

func BenchmarkQSample(b *testing.B) {
	s, x, eps, t := benchInputs(b)
	dst := make([]float32, len(x))
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		s.QSample(dst, x, eps, t, benchB)
	}
}

func BenchmarkPSample(b *testing.B) {
	s, x, eps, t := benchInputs(b)
	dst := make([]float32, len(x))
	px := make([]float32, len(x))
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		s.PSample(dst, px, x, eps, eps, t, benchB, ReverseOptions{})
	}
}

func BenchmarkStreamNoise(b *testing.B) {
	dst := make([]float32, benchB*benchD)
	n := StreamNoise(1, rng.PurposeSampling, 0)
	b.SetBytes(int64(4 * len(dst)))
	for b.Loop() {
		n(dst, 500, benchB)
	}
}

func BenchmarkVLBTerms(b *testing.B) {
	s, x, eps, t := benchInputs(b)
	dst := make([]float64, benchB)
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		s.VLBTerms(dst, nil, x, x, eps, t, benchB, ReverseOptions{})
	}
}
