package diffusion

import (
	"math"
	"testing"

	"ddpm/internal/rng"
)

// perfectModel is the optimal eps_theta when the data is the single image x0: it inverts eq. 4
// exactly (in float64), so p_theta matches q and every KL term vanishes.
func perfectModel(s *Schedule, x0 []float32) EpsModel {
	tb := s.Tables()
	return func(xt []float32, t []int32, batch int) []float32 {
		d := len(xt) / batch
		out := make([]float32, len(xt))
		for b, tt := range t {
			for i := range d {
				j := b*d + i
				out[j] = float32((float64(xt[j]) - tb.SqrtAlphasCumprod[tt]*float64(x0[i])) / tb.SqrtOneMinusAlphasCumprod[tt])
			}
		}
		return out
	}
}

// TestCalcBPDPerfectModel: for a one-point data distribution and the optimal model with
// fixed-small variance, the bound of eq. 5 reduces to L_0 + L_T: every KL term t >= 1 is ~0, the
// predicted x0 is exact, and L_0 is the decoder NLL of x0 under N(x0, beta-tilde_1) in bits/dim.
func TestCalcBPDPerfectModel(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 100, BetaStart: 1e-4, BetaEnd: 0.2})
	tb := s.Tables()
	// One image of 6 pixels on the 8-bit grid, both edges included.
	x0 := []float32{-1, float32(3/127.5 - 1), 0.0039215684, float32(200/127.5 - 1), 1, float32(254/127.5 - 1)}
	const batch = 2
	data := append(append([]float32(nil), x0...), x0...)
	r := s.CalcBPD(perfectModel(s, x0), data, batch, StreamNoise(5, rng.PurposeNoise, 0), ReverseOptions{Variance: FixedSmall})
	T := s.T()
	if len(r.Total) != batch || len(r.Prior) != batch || len(r.Terms) != batch*T || len(r.MSE) != batch*T {
		t.Fatalf("shapes: %d %d %d %d", len(r.Total), len(r.Prior), len(r.Terms), len(r.MSE))
	}
	logScale := 0.5 * tb.PosteriorLogVarianceClipped[0]
	nll := 0.0
	for _, v := range x0 {
		nll -= DiscretizedGaussianLogLikelihood(float64(v), float64(v), logScale)
	}
	wantL0 := nll / float64(len(x0)) / math.Ln2
	prior := make([]float64, 1)
	s.PriorBPD(prior, x0, 1)
	for b := range batch {
		for tt := 1; tt < T; tt++ {
			if v := r.Terms[b*T+tt]; v < 0 || v > 1e-6 {
				t.Errorf("b=%d t=%d: KL term %v bits, want ~0", b, tt, v)
			}
			if r.MSE[b*T+tt] > 1e-9 {
				t.Errorf("b=%d t=%d: predicted-x0 MSE %v, want ~0", b, tt, r.MSE[b*T+tt])
			}
		}
		if e := relErr(r.Terms[b*T], wantL0); e > 1e-5 {
			t.Errorf("b=%d: L_0 = %.10g bits, want %.10g (rel err %.3g)", b, r.Terms[b*T], wantL0, e)
		}
		if r.Prior[b] != prior[0] {
			t.Errorf("b=%d: prior %v, want %v", b, r.Prior[b], prior[0])
		}
		sum := 0.0
		for _, v := range r.Terms[b*T : (b+1)*T] {
			sum += v
		}
		if r.Total[b] != sum+r.Prior[b] {
			t.Errorf("b=%d: total %v, want sum of terms + prior = %v", b, r.Total[b], sum+r.Prior[b])
		}
		if e := relErr(r.Total[b], wantL0+prior[0]); e > 1e-4 {
			t.Errorf("b=%d: total %v, want L_0 + L_T = %v", b, r.Total[b], wantL0+prior[0])
		}
	}
}

// vlbOracle is _vb_terms_bpd for one sample written out in float64 from the tables, independently
// of the float32 path.
func vlbOracle(tb Tables, v Variance, x0, xt, eps []float32, t int) (term, mse float64) {
	lv := tb.PosteriorLogVarianceClipped[t]
	if v == FixedLarge {
		lv = tb.FixedLargeLogVariance[t]
	}
	for i := range x0 {
		px := tb.SqrtRecipAlphasCumprod[t]*float64(xt[i]) - tb.SqrtRecipm1AlphasCumprod[t]*float64(eps[i])
		px = math.Max(-1, math.Min(1, px))
		m := tb.PosteriorMeanCoef1[t]*px + tb.PosteriorMeanCoef2[t]*float64(xt[i])
		if t == 0 {
			term -= DiscretizedGaussianLogLikelihood(float64(x0[i]), m, 0.5*lv)
		} else {
			qm := tb.PosteriorMeanCoef1[t]*float64(x0[i]) + tb.PosteriorMeanCoef2[t]*float64(xt[i])
			term += NormalKL(qm, tb.PosteriorLogVarianceClipped[t], m, lv)
		}
		mse += (px - float64(x0[i])) * (px - float64(x0[i]))
	}
	n := float64(len(x0))
	return term / n / math.Ln2, mse / n
}

// TestCalcBPDMatchesOracle: with an imperfect model every per-t term and MSE of CalcBPD equals the
// float64 oracle for the same x_t (the noise is reproducible), for both variances.
func TestCalcBPDMatchesOracle(t *testing.T) {
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: 40, BetaStart: 1e-4, BetaEnd: 0.1})
	tb := s.Tables()
	const batch, d = 3, 5
	x0 := make([]float32, batch*d)
	for i := range x0 {
		x0[i] = float32((i*37)%256)/127.5 - 1
	}
	noise := StreamNoise(11, rng.PurposeNoise, 100)
	for _, v := range []Variance{FixedLarge, FixedSmall} {
		opts := ReverseOptions{Variance: v}
		r := s.CalcBPD(toyModel(), x0, batch, noise, opts)
		T := s.T()
		eps := make([]float32, batch*d)
		xt := make([]float32, batch*d)
		for tt := range T {
			ts := []int32{int32(tt), int32(tt), int32(tt)}
			noise(eps, tt, batch)
			s.QSample(xt, x0, eps, ts, batch)
			out := toyModel()(xt, ts, batch)
			terms := make([]float64, batch)
			mse := make([]float64, batch)
			s.VLBTerms(terms, mse, x0, xt, out, ts, batch, opts)
			for b := range batch {
				lo, hi := b*d, (b+1)*d
				wantTerm, wantMSE := vlbOracle(tb, v, x0[lo:hi], xt[lo:hi], out[lo:hi], tt)
				if r.Terms[b*T+tt] != terms[b] || r.MSE[b*T+tt] != mse[b] {
					t.Fatalf("%v t=%d b=%d: CalcBPD %v/%v, VLBTerms %v/%v", v, tt, b, r.Terms[b*T+tt], r.MSE[b*T+tt], terms[b], mse[b])
				}
				if e := relErr(terms[b], wantTerm); e > 1e-4 {
					t.Errorf("%v t=%d b=%d: term %.8g, oracle %.8g (rel err %.3g)", v, tt, b, terms[b], wantTerm, e)
				}
				if math.Abs(mse[b]-wantMSE) > 1e-5*math.Max(1, wantMSE) {
					t.Errorf("%v t=%d b=%d: mse %.8g, oracle %.8g", v, tt, b, mse[b], wantMSE)
				}
			}
		}
	}
}
