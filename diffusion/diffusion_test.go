package diffusion

import (
	"errors"
	"math"
	"strings"
	"testing"

	"ddpm/internal/rng"
)

// toyModel is a deterministic stand-in for eps_theta that depends on x and t and returns a
// buffer it owns, as a real network may.
func toyModel() EpsModel {
	var buf []float32
	return func(xt []float32, t []int32, batch int) []float32 {
		buf = append(buf[:0], make([]float32, len(xt))...)
		d := len(xt) / batch
		for b := range batch {
			for i := b * d; i < (b+1)*d; i++ {
				buf[i] = 0.5*xt[i] + 0.01*float32(int(t[b])%7) - 0.02*float32(i%d)
			}
		}
		return buf
	}
}

// constModel returns eps_theta = c everywhere.
func constModel(c float32) EpsModel {
	return func(xt []float32, t []int32, batch int) []float32 {
		out := make([]float32, len(xt))
		for i := range out {
			out[i] = c
		}
		return out
	}
}

func TestPosteriorVarianceAtZero(t *testing.T) {
	tb := mustSchedule(t, DefaultScheduleConfig()).Tables()
	if tb.PosteriorVariance[0] != 0 {
		t.Errorf("posterior variance at t=0 = %v, want 0", tb.PosteriorVariance[0])
	}
	const want = -9.81672513529567 // log beta-tilde at t = 1 (reference JSON)
	if got := tb.PosteriorLogVarianceClipped[0]; got != tb.PosteriorLogVarianceClipped[1] || relErr(got, want) > tolTable64 {
		t.Errorf("clipped log variance at t=0 = %.17g, want log var(t=1) = %.17g", got, want)
	}
	if got := tb.FixedLargeLogVariance[0]; got != tb.PosteriorLogVarianceClipped[1] {
		t.Errorf("fixedlarge log variance at t=0 = %v, want log beta-tilde_1 = %v", got, tb.PosteriorLogVarianceClipped[1])
	}
}

// Every kind: 1 - alphabar_t > 0 at every t and no NaN or infinity anywhere.
func TestSchedulesFiniteAndPositive(t *testing.T) {
	for _, cfg := range []ScheduleConfig{
		DefaultScheduleConfig(),
		{Kind: KindQuad, T: 1000, BetaStart: 1e-4, BetaEnd: 0.02},
		{Kind: KindConst, T: 1000, BetaEnd: 0.02},
		{Kind: KindCosine, T: 1000},
		{Kind: KindCosine, T: 4000},
		{Kind: KindLinear, T: 2, BetaStart: 1e-4, BetaEnd: 0.02},
	} {
		s := mustSchedule(t, cfg)
		tb := s.Tables()
		for t0, ab := range tb.AlphasCumprod {
			if !(1-ab > 0) {
				t.Errorf("%+v: 1 - alphabar[%d] = %v", cfg, t0, 1-ab)
			}
		}
		for name, col := range tb.columns() {
			if len(col) != cfg.T {
				t.Errorf("%+v: len(%s) = %d", cfg, name, len(col))
			}
			for i, v := range col {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Errorf("%+v: %s[%d] = %v", cfg, name, i, v)
				}
			}
		}
		for _, tab := range [][]float32{s.sqrtAB32, s.sqrt1mAB32, s.recipAB32, s.recipm1AB32, s.coef1_32, s.coef2_32, s.sigma32[0], s.sigma32[1]} {
			for i, v := range tab {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Errorf("%+v: float32 table entry %d = %v", cfg, i, v)
				}
			}
		}
	}
}

func TestScheduleKinds(t *testing.T) {
	quad := mustSchedule(t, ScheduleConfig{Kind: KindQuad, T: 5, BetaStart: 1e-4, BetaEnd: 0.04}).Tables().Betas
	// linspace(0.01, 0.2, 5)^2
	for i, want := range []float64{1e-4, 0.00330625, 0.011025, 0.02325625, 0.04} {
		if relErr(quad[i], want) > 1e-14 {
			t.Errorf("quad betas[%d] = %.17g, want %.17g", i, quad[i], want)
		}
	}
	for i, b := range mustSchedule(t, ScheduleConfig{Kind: KindConst, T: 7, BetaEnd: 0.3}).Tables().Betas {
		if b != 0.3 {
			t.Errorf("const betas[%d] = %v, want 0.3", i, b)
		}
	}
	// Cosine (Nichol & Dhariwal eq. 17): alphabar_t = f(t)/f(0), f(t) = cos((t/T + s)/(1+s) pi/2)^2;
	// the cumulative product of 1 - beta must reproduce it wherever no clipping happened.
	const T = 1000
	tb := mustSchedule(t, ScheduleConfig{Kind: KindCosine, T: T}).Tables()
	f := func(i int) float64 {
		c := math.Cos((float64(i)/T + 0.008) / 1.008 * math.Pi / 2)
		return c * c
	}
	for _, i := range []int{0, 1, 500, 900, 990} {
		if e := relErr(tb.AlphasCumprod[i], f(i+1)/f(0)); e > 1e-10 {
			t.Errorf("cosine alphabar[%d] = %.17g, want %.17g (rel err %.3g)", i, tb.AlphasCumprod[i], f(i+1)/f(0), e)
		}
	}
	if tb.Betas[T-1] != DefaultCosineMaxBeta {
		t.Errorf("cosine last beta = %v, want clipped to %v", tb.Betas[T-1], DefaultCosineMaxBeta)
	}
	lin := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 3, BetaStart: 0.1, BetaEnd: 0.3}).Tables().Betas
	if lin[0] != 0.1 || relErr(lin[1], 0.2) > 1e-15 || lin[2] != 0.3 {
		t.Errorf("linear T=3 betas = %v", lin)
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  ScheduleConfig
		want string
	}{
		{ScheduleConfig{}, "T = 0"},
		{ScheduleConfig{Kind: KindLinear, T: 1, BetaStart: 1e-4, BetaEnd: 0.02}, "T = 1"},
		{ScheduleConfig{Kind: "sigmoid", T: 10, BetaStart: 1e-4, BetaEnd: 0.02}, `kind "sigmoid"`},
		{ScheduleConfig{Kind: KindLinear, T: 10, BetaStart: 0, BetaEnd: 0.02}, "beta_start = 0"},
		{ScheduleConfig{Kind: KindLinear, T: 10, BetaStart: 1e-4, BetaEnd: 1}, "beta_end = 1"},
		{ScheduleConfig{Kind: KindQuad, T: 10, BetaStart: -1, BetaEnd: 0.02}, "beta_start = -1"},
		{ScheduleConfig{Kind: KindConst, T: 10, BetaEnd: math.NaN()}, "beta_end = NaN"},
		{ScheduleConfig{Kind: KindCosine, T: 10, CosineOffset: -0.1}, "cosine offset"},
		// alphabar underflows to 0: sqrt(1/alphabar) would be infinite.
		{ScheduleConfig{Kind: KindConst, T: 100000, BetaEnd: 0.5}, "alphas_cumprod"},
	} {
		s, err := NewSchedule(tc.cfg)
		if s != nil || !errors.Is(err, ErrInvalidSchedule) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSchedule(%+v) = %v, %v; want ErrInvalidSchedule mentioning %q", tc.cfg, s, err, tc.want)
		}
	}
	if _, err := NewScheduleFromBetas([]float64{0.1, 1.0}); !errors.Is(err, ErrInvalidSchedule) || !strings.Contains(err.Error(), "beta[1] = 1") {
		t.Errorf("beta = 1: err = %v", err)
	}
	if _, err := ParseVariance("learned"); !errors.Is(err, ErrUnknownVariance) || err.Error() != `diffusion: unknown variance "learned", want fixedlarge or fixedsmall` {
		t.Errorf("ParseVariance(learned): %v", err)
	}
	for _, v := range []Variance{FixedLarge, FixedSmall} {
		if got, err := ParseVariance(v.String()); err != nil || got != v {
			t.Errorf("ParseVariance(%q) = %v, %v", v.String(), got, err)
		}
	}
}

// TestQSampleAndPredictX0: eq. 4 against the float64 formula, and PredictX0 inverts it.
func TestQSampleAndPredictX0(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	tb := s.Tables()
	x0 := []float32{-1, -0.25, 0.5, 1, 0.125, 0.75}
	eps := []float32{0.3, -1.2, 2.5, 0.01, -0.7, 1.1}
	ts := []int32{0, 999}
	xt := make([]float32, 6)
	s.QSample(xt, x0, eps, ts, 2)
	for i := range xt {
		tt := ts[i/3]
		want := tb.SqrtAlphasCumprod[tt]*float64(x0[i]) + tb.SqrtOneMinusAlphasCumprod[tt]*float64(eps[i])
		if math.Abs(float64(xt[i])-want) > tolPath32*math.Max(1, math.Abs(want)) {
			t.Errorf("x_t[%d] = %v, want %v", i, xt[i], want)
		}
	}
	back := make([]float32, 6)
	s.PredictX0(back, xt, eps, ts, 2)
	for i := range back {
		// At t = 999, sqrt(1/alphabar) = 157 amplifies the float32 rounding of x_t.
		tol := 1e-6 * tb.SqrtRecipAlphasCumprod[ts[i/3]] * 4
		if math.Abs(float64(back[i]-x0[i])) > tol {
			t.Errorf("PredictX0[%d] = %v, want %v (tol %g)", i, back[i], x0[i], tol)
		}
	}
}

// TestClipKeepsOutputsInRange: with eps_theta = 1e3 the clipped predicted x0 and the final
// sample stay within [-1, 1] (p_mean_variance with clip_denoised, Algorithm 2).
func TestClipKeepsOutputsInRange(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 50, BetaStart: 1e-4, BetaEnd: 0.2})
	for _, c := range []float32{1e3, -1e3} {
		p := s.SampleProgressive(constModel(c), Shape{2, 1, 3, 3}, StreamNoise(1, rng.PurposeSampling, 0), 1, ReverseOptions{})
		if len(p.Steps) != 50 || p.Steps[0] != 49 || p.Steps[49] != 0 {
			t.Fatalf("steps = %v", p.Steps)
		}
		for k, px := range p.PredX0 {
			for i, v := range px {
				if v < -1 || v > 1 {
					t.Fatalf("eps=%v: predicted x0 at t=%d [%d] = %v outside [-1, 1]", c, p.Steps[k], i, v)
				}
			}
		}
		for i, v := range p.X0 {
			if v < -1 || v > 1 {
				t.Fatalf("eps=%v: sample[%d] = %v outside [-1, 1]", c, i, v)
			}
		}
	}
	// Without clipping the same model leaves [-1, 1] far behind.
	x := s.Sample(constModel(1e3), Shape{1, 1, 1, 2}, StreamNoise(1, rng.PurposeSampling, 0), ReverseOptions{NoClip: true})
	if math.Abs(float64(x[0])) < 10 {
		t.Errorf("unclipped sample %v, want far outside [-1, 1]", x)
	}
}

// TestLastStepDeterministic: Algorithm 2 adds no noise at t = 0, so x_0 from the same x_1 is
// bitwise identical whatever the noise seed.
func TestLastStepDeterministic(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	x1 := []float32{0.3, -0.9, 0.01, 0.77, -0.2, 0.5}
	a := append([]float32(nil), x1...)
	b := append([]float32(nil), x1...)
	for _, v := range []Variance{FixedLarge, FixedSmall} {
		s.Denoise(toyModel(), a, 0, 2, StreamNoise(1, rng.PurposeSampling, 0), ReverseOptions{Variance: v})
		s.Denoise(toyModel(), b, 0, 2, StreamNoise(2, rng.PurposeSampling, 0), ReverseOptions{Variance: v})
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%v: x0[%d] = %v vs %v with another seed", v, i, a[i], b[i])
			}
		}
	}
	// PSample at t = 0 accepts nil noise and gives mu exactly.
	out := make([]float32, 3)
	px := make([]float32, 3)
	mean := make([]float32, 3)
	px2 := make([]float32, 3)
	eps := []float32{0.1, 0.2, -0.3}
	s.PSample(out, px, x1[:3], eps, nil, []int32{0}, 1, ReverseOptions{})
	s.PMeanVariance(mean, px2, x1[:3], eps, []int32{0}, 1, true)
	for i := range out {
		if out[i] != mean[i] || px[i] != px2[i] {
			t.Fatalf("PSample(t=0) = %v, %v, want %v, %v", out, px, mean, px2)
		}
	}
}

// TestPSampleStep: one step of Algorithm 2 at t > 0 against the float64 formula
// x_{t-1} = coef1 clip(x0_hat) + coef2 x_t + sigma_t z.
func TestPSampleStep(t *testing.T) {
	s := mustSchedule(t, DefaultScheduleConfig())
	tb := s.Tables()
	xt := []float32{0.5, -1.5, 2}
	eps := []float32{0.2, -0.1, 0.4}
	z := []float32{1, -0.5, 0.25}
	for _, v := range []Variance{FixedLarge, FixedSmall} {
		for _, tt := range []int{1, 10, 500, 999} {
			out := make([]float32, 3)
			px := make([]float32, 3)
			s.PSample(out, px, xt, eps, z, []int32{int32(tt)}, 1, ReverseOptions{Variance: v})
			sigma := math.Exp(0.5 * s.ModelLogVariance(v, tt))
			if v == FixedSmall && relErr(sigma*sigma, tb.PosteriorVariance[tt]) > 1e-12 ||
				v == FixedLarge && relErr(sigma*sigma, tb.Betas[tt]) > 1e-12 {
				t.Errorf("%v t=%d: sigma^2 = %v", v, tt, sigma*sigma)
			}
			for i := range out {
				x0 := tb.SqrtRecipAlphasCumprod[tt]*float64(xt[i]) - tb.SqrtRecipm1AlphasCumprod[tt]*float64(eps[i])
				x0 = math.Max(-1, math.Min(1, x0))
				want := tb.PosteriorMeanCoef1[tt]*x0 + tb.PosteriorMeanCoef2[tt]*float64(xt[i]) + sigma*float64(z[i])
				if math.Abs(float64(out[i])-want) > 4e-6*math.Max(1, math.Abs(want)) {
					t.Errorf("%v t=%d: x_{t-1}[%d] = %v, want %v", v, tt, i, out[i], want)
				}
				if math.Abs(float64(px[i])-x0) > 2e-6*tb.SqrtRecipAlphasCumprod[tt] {
					t.Errorf("%v t=%d: predX0[%d] = %v, want %v", v, tt, i, px[i], x0)
				}
			}
		}
	}
	if got := s.ModelVariance(FixedLarge, 0); got != tb.Betas[0] {
		t.Errorf("ModelVariance(FixedLarge, 0) = %v", got)
	}
	if got := s.ModelVariance(FixedSmall, 0); got != 0 {
		t.Errorf("ModelVariance(FixedSmall, 0) = %v", got)
	}
}

// TestSampleIndependentOfBatch: image i's sample depends on (seed, i) only.
func TestSampleIndependentOfBatch(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 20, BetaStart: 1e-3, BetaEnd: 0.2})
	const seed = 42
	all := s.Sample(toyModel(), Shape{3, 2, 2, 2}, StreamNoise(seed, rng.PurposeSampling, 0), ReverseOptions{})
	one := s.Sample(toyModel(), Shape{1, 2, 2, 2}, StreamNoise(seed, rng.PurposeSampling, 2), ReverseOptions{})
	for i := range one {
		if math.Float32bits(one[i]) != math.Float32bits(all[16+i]) {
			t.Fatalf("image 2 alone [%d] = %v, in a batch of 3: %v", i, one[i], all[16+i])
		}
	}
	other := s.Sample(toyModel(), Shape{1, 2, 2, 2}, StreamNoise(seed+1, rng.PurposeSampling, 2), ReverseOptions{})
	same := true
	for i := range one {
		same = same && one[i] == other[i]
	}
	if same {
		t.Fatal("another seed gave the same sample")
	}
	// The noise itself: row b of a batch starting at image 5 is image 5+b alone.
	n := StreamNoise(seed, rng.PurposeSampling, 5)
	batch := make([]float32, 3*4)
	n(batch, 7, 3)
	single := make([]float32, 4)
	StreamNoise(seed, rng.PurposeSampling, 6)(single, 7, 1)
	for i := range single {
		if single[i] != batch[4+i] {
			t.Fatalf("noise of image 6 differs: %v vs %v", single, batch[4:8])
		}
	}
}

// TestProgressiveMatchesSample: the progressive loop is the same chain, recording the original's
// slots t = k*every, k < T/every.
func TestProgressiveMatchesSample(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 23, BetaStart: 1e-3, BetaEnd: 0.2})
	sh := Shape{2, 1, 2, 3}
	noise := StreamNoise(9, rng.PurposeSampling, 0)
	plain := s.Sample(toyModel(), sh, noise, ReverseOptions{Variance: FixedSmall})
	calls := 0
	p := s.SampleProgressive(toyModel(), sh, noise, 5, ReverseOptions{Variance: FixedSmall,
		Progress: func(int, []float32, []float32) { calls++ }})
	if calls != 23 {
		t.Errorf("Progress called %d times, want 23", calls)
	}
	want := []int{15, 10, 5, 0} // 23/5 = 4 slots; t = 20 falls outside them as in the original
	if len(p.Steps) != len(want) {
		t.Fatalf("steps = %v, want %v", p.Steps, want)
	}
	for i := range want {
		if p.Steps[i] != want[i] || len(p.PredX0[i]) != sh.Len() || len(p.Xt[i]) != sh.Len() {
			t.Fatalf("steps = %v, want %v", p.Steps, want)
		}
	}
	for i := range plain {
		if plain[i] != p.X0[i] || p.Xt[3][i] != plain[i] {
			t.Fatalf("progressive x0[%d] = %v, plain %v", i, p.X0[i], plain[i])
		}
	}
}

// TestInterpolate: paper Fig. 8. lambda = 0 and 1 are the two images' own reconstructions from t
// with the shared noise; the mixture at 0.5 is the reconstruction of the mean latent.
func TestInterpolate(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 30, BetaStart: 1e-3, BetaEnd: 0.2})
	xa := []float32{-1, -0.5, 0.25, 1}
	xb := []float32{0.75, 0.5, -0.25, -1}
	eps := []float32{0.3, -0.2, 1.1, 0.05}
	const tt = 12
	noise := SharedNoise(3, rng.PurposeSampling, 0)
	got := s.Interpolate(toyModel(), xa, xb, eps, []float64{0, 0.5, 1}, tt, noise, ReverseOptions{})
	if len(got) != 12 {
		t.Fatalf("len = %d", len(got))
	}
	for k, x0 := range [][]float32{xa, xb} {
		x := make([]float32, 4)
		s.QSample(x, x0, eps, []int32{tt}, 1)
		s.Denoise(toyModel(), x, tt, 1, noise, ReverseOptions{})
		row := got[8*k : 8*k+4]
		for i := range x {
			if x[i] != row[i] {
				t.Fatalf("lambda=%d row = %v, want %v", k, row, x)
			}
		}
	}
}

func TestToUint8(t *testing.T) {
	x := []float32{-1, -0.996, 0, 0.999, 1.0029, -3, float32(math.NaN()), float32(math.Inf(1))}
	want := []uint8{0, 1, 128, 255, 255, 0, 0, 255}
	got := make([]uint8, len(x))
	ToUint8(got, x)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("ToUint8(%v) = %d, want %d", x[i], got[i], want[i])
		}
	}
}

// TestLSimple: eq. 14 per sample and its gradient against finite differences.
func TestLSimple(t *testing.T) {
	eps := []float32{1, 2, 3, -1, 0, 0.5}
	pred := []float32{1.5, 2, 2, -1, 0.25, 0.5}
	dst := make([]float64, 2)
	LSimple(dst, eps, pred, 2)
	if want := (0.25 + 0 + 1) / 3.0; relErr(dst[0], want) > 1e-15 {
		t.Errorf("L_simple[0] = %v, want %v", dst[0], want)
	}
	if want := 0.0625 / 3; relErr(dst[1], want) > 1e-15 {
		t.Errorf("L_simple[1] = %v, want %v", dst[1], want)
	}
	grad := make([]float32, 6)
	LSimpleGrad(grad, eps, pred, 2)
	const h = 1e-3
	for i := range pred {
		p := append([]float32(nil), pred...)
		p[i] += h
		up := make([]float64, 2)
		LSimple(up, eps, p, 2)
		p[i] -= 2 * h
		down := make([]float64, 2)
		LSimple(down, eps, p, 2)
		fd := (up[0] + up[1] - down[0] - down[1]) / (2 * h)
		if math.Abs(fd-float64(grad[i])) > 1e-4 {
			t.Errorf("grad[%d] = %v, finite difference %v", i, grad[i], fd)
		}
	}
}

// TestPanics: programmer errors panic with the package prefix.
func TestPanics(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 10, BetaStart: 1e-3, BetaEnd: 0.2})
	x := make([]float32, 4)
	noise := StreamNoise(1, rng.PurposeSampling, 0)
	for name, f := range map[string]func(){
		"QSample short eps": func() { s.QSample(x, x, x[:3], []int32{0, 1}, 2) },
		"QSample t=T":       func() { s.QSample(x, x, x, []int32{0, 10}, 2) },
		"QSample t<0":       func() { s.QSample(x, x, x, []int32{-1, 0}, 2) },
		"QSample len(t)":    func() { s.QSample(x, x, x, []int32{0}, 2) },
		"QSample batch 0":   func() { s.QSample(x, x, x, nil, 0) },
		"QSample batch 3":   func() { s.QSample(x, x, x, []int32{0, 0, 0}, 3) },
		"QPosteriorMean":    func() { s.QPosteriorMean(x[:2], x, x, []int32{0, 1}, 2) },
		"PredictX0":         func() { s.PredictX0(x, x, x, []int32{0, 11}, 2) },
		"PMeanVariance":     func() { s.PMeanVariance(x, x[:1], x, x, []int32{0, 1}, 2, true) },
		"PSample noise":     func() { s.PSample(x, make([]float32, 4), x, x, nil, []int32{1, 1}, 2, ReverseOptions{}) },
		"PSample variance":  func() { s.PSample(x, make([]float32, 4), x, x, x, []int32{1, 1}, 2, ReverseOptions{Variance: 7}) },
		"ModelLogVariance":  func() { s.ModelLogVariance(FixedSmall, 10) },
		"LSimple dst":       func() { LSimple(make([]float64, 1), x, x, 2) },
		"LSimpleGrad":       func() { LSimpleGrad(x, x, x[:2], 2) },
		"VLBTerms":          func() { s.VLBTerms(make([]float64, 2), nil, x, x, x, []int32{0, 10}, 2, ReverseOptions{}) },
		"PriorBPD":          func() { s.PriorBPD(make([]float64, 3), x, 2) },
		"Denoise from":      func() { s.Denoise(toyModel(), x, 10, 2, noise, ReverseOptions{}) },
		"Denoise model len": func() {
			bad := func(xt []float32, t []int32, b int) []float32 { return xt[:1] }
			s.Denoise(bad, x, 3, 2, noise, ReverseOptions{})
		},
		"Sample shape":        func() { s.Sample(toyModel(), Shape{0, 1, 1, 1}, noise, ReverseOptions{}) },
		"Progressive every":   func() { s.SampleProgressive(toyModel(), Shape{1, 1, 1, 1}, noise, 0, ReverseOptions{}) },
		"Interpolate lambdas": func() { s.Interpolate(toyModel(), x, x, x, nil, 3, noise, ReverseOptions{}) },
		"Interpolate t":       func() { s.Interpolate(toyModel(), x, x, x, []float64{0}, 10, noise, ReverseOptions{}) },
		"ToUint8":             func() { ToUint8(make([]uint8, 3), x) },
		"TimestepEmbedding":   func() { TimestepEmbedding(make([]float32, 31), []int32{1}, 32) },
		"TimestepEmbedding 3": func() { TimestepEmbedding(make([]float32, 3), []int32{1}, 3) },
		"CalcBPD model len": func() {
			bad := func(xt []float32, t []int32, b int) []float32 { return xt[:1] }
			s.CalcBPD(bad, x, 2, noise, ReverseOptions{})
		},
	} {
		func() {
			defer func() {
				r := recover()
				msg, ok := r.(string)
				if !ok || !strings.HasPrefix(msg, "diffusion: ") {
					t.Errorf("%s: recovered %v, want a panic starting with \"diffusion: \"", name, r)
				}
			}()
			f()
		}()
	}
}
