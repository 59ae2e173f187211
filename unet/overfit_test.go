package unet

import (
	"testing"

	"ddpm/dataset"
	"ddpm/diffusion"
	"ddpm/internal/rng"
	"ddpm/optim"
)

// TestOverfitMNIST trains the tiny preset on a fixed batch of 16 real MNIST training images
// (the GoMNIST module, padded 28->32 with -1) for 40 steps of Adam (lr 3e-3) and requires
// L_simple on a fixed evaluation draw of (t, eps) for the same images to fall by more than half. Each training
// step draws fresh t ~ U{0..999} and eps ~ N(0, I) from the counter-based RNG, as training does.
func TestOverfitMNIST(t *testing.T) {
	const (
		batch = 16
		// The issue asks for a drop by more than half within 200 steps; at this learning rate
		// it takes about 10 (1.02 -> 0.50), and 40 steps reach about 0.08, a wide margin.
		steps = 40
		lr    = 3e-3 // no warmup: the test checks that the whole pipeline learns, quickly
	)
	ds, err := dataset.Open("mnist", dataset.Options{})
	if err != nil {
		t.Fatalf("MNIST (GoMNIST module): %v", err)
	}
	cfg, _ := Preset("tiny")
	c, h, w := ds.Shape()
	if c != cfg.InCh || h != cfg.Resolution || w != cfg.Resolution {
		t.Fatalf("MNIST shape %dx%dx%d, tiny wants %dx%dx%d", c, h, w, cfg.InCh, cfg.Resolution, cfg.Resolution)
	}
	d := c * h * w
	x0 := make([]float32, batch*d)
	for i := range batch {
		if err := ds.Image(i, x0[i*d:(i+1)*d]); err != nil {
			t.Fatal(err)
		}
	}
	sched, err := diffusion.NewSchedule(diffusion.DefaultScheduleConfig())
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(0)
	adam := optim.NewAdam(m.NumParams())

	ts := make([]int32, batch)
	eps := make([]float32, batch*d)
	xt := make([]float32, batch*d)
	grad := make([]float32, batch*d)
	losses := make([]float64, batch)
	draw := func(seed uint64) {
		var src rng.Source
		for i := range batch {
			src.Reset(seed, rng.Stream(uint64(i), rng.PurposeTimestep))
			ts[i] = int32(src.Intn(1000))
			src.Reset(seed, rng.Stream(uint64(i), rng.PurposeNoise))
			src.FillNormal(eps[i*d : (i+1)*d])
		}
		sched.QSample(xt, x0, eps, ts, batch)
	}
	evalLoss := func() float64 {
		draw(12345)
		diffusion.LSimple(losses, eps, m.Forward(xt, ts, batch, nil), batch)
		var s float64
		for _, l := range losses {
			s += l
		}
		return s / batch
	}
	before := evalLoss()
	for step := range steps {
		draw(uint64(step + 1))
		pred := m.Forward(xt, ts, batch, nil)
		diffusion.LSimpleGrad(grad, eps, pred, batch)
		for i := range grad {
			grad[i] /= batch // gradient of the batch mean
		}
		m.ZeroGrads()
		m.Backward(grad)
		optim.ClipGlobalNorm(m.Grads(), 1)
		adam.Update(m.Params(), m.Grads(), lr)
	}
	after := evalLoss()
	t.Logf("L_simple on the evaluation draw: %.4f -> %.4f after %d steps", before, after, steps)
	if !(after < before/2) {
		t.Fatalf("L_simple fell from %.4f to %.4f, want below %.4f", before, after, before/2)
	}
}
