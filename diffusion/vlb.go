package diffusion

import (
	"fmt"
	"math"
)

// NormalKL returns KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats, for scalars:
// 0.5 (-1 + logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2)),
// evaluated in the original's order (diffusion_utils_2.py, normal_kl).
func NormalKL(mean1, logvar1, mean2, logvar2 float64) float64 {
	dm := mean1 - mean2
	return 0.5 * (-1 + logvar2 - logvar1 + math.Exp(logvar1-logvar2) + float64(dm*dm*math.Exp(-logvar2)))
}

// ApproxStandardNormalCDF is the original's tanh approximation of the standard normal CDF
// (utils.py, approx_standard_normal_cdf): 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). It is
// not erf; the bound is computed with it to match the original's numbers.
func ApproxStandardNormalCDF(x float64) float64 {
	return 0.5 * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+float64(0.044715*math.Pow(x, 3)))))
}

// DiscretizedGaussianLogLikelihood returns log p(x) in nats of the data value x (scaled to
// [-1, 1] from 8 bits) under the discretized Gaussian decoder N(mean, exp(2 logScale)) of paper
// eq. 13 (utils.py, discretized_gaussian_log_likelihood): the mass of the bin [x - 1/255,
// x + 1/255], with the edge bins extended to -inf (x < -0.999) and +inf (x > 0.999), the CDF
// ApproxStandardNormalCDF, and every probability floored at 1e-12 before the log.
func DiscretizedGaussianLogLikelihood(x, mean, logScale float64) float64 {
	c := x - mean
	inv := math.Exp(-logScale)
	cdfPlus := ApproxStandardNormalCDF(inv * (c + 1.0/255))
	cdfMin := ApproxStandardNormalCDF(inv * (c - 1.0/255))
	switch {
	case x < -0.999:
		return math.Log(math.Max(cdfPlus, 1e-12))
	case x > 0.999:
		return math.Log(math.Max(1-cdfMin, 1e-12))
	default:
		return math.Log(math.Max(cdfPlus-cdfMin, 1e-12))
	}
}

// PriorBPD writes L_T of eq. 5 for each sample, in bits per dimension (the original's
// _prior_bpd): the mean over the D values of KL(q(x_T | x0) || N(0, I)) divided by log 2, with
// q(x_T | x0) = N(sqrt(alphabar_T) x0, 1 - alphabar_T) from the float64 tables. x0 is [B, D];
// dst has B = batch entries. It panics if the lengths differ.
func (s *Schedule) PriorBPD(dst []float64, x0 []float32, batch int) {
	d := flatDims("PriorBPD", batch, x0)
	if len(dst) != batch {
		panic(fmt.Sprintf("diffusion: PriorBPD: len(dst) = %d, want batch = %d", len(dst), batch))
	}
	last := s.T() - 1
	c, lv := s.tab.SqrtAlphasCumprod[last], s.tab.LogOneMinusAlphasCumprod[last]
	for b := range batch {
		var sum float64
		for _, v := range x0[b*d : (b+1)*d] {
			sum += NormalKL(c*float64(v), lv, 0, 0)
		}
		dst[b] = sum / float64(d) / math.Ln2
	}
}

// VLBTerms writes the term of the variational bound (eq. 5) at each sample's timestep t, in bits
// per dimension (the original's _vb_terms_bpd), into dst: for t >= 1 the mean over D of
// KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t)) (L_{t-1} in the paper's numbering), and for
// t = 0 the decoder's negative log-likelihood -log p_theta(x0 | x_1) (L_0,
// DiscretizedGaussianLogLikelihood with log scale 0.5 ModelLogVariance), each divided by log 2.
// The model's mean and predicted x0 come from PMeanVariance(xt, epsTheta) (clipped unless
// opts.NoClip), q's mean and log variance from the float64 tables; the terms are summed in
// float64. If mse is not nil it receives the mean over D of (predX0 - x0)^2. x0, xt and epsTheta
// are [B, D] with B = batch = len(t) = len(dst) (= len(mse)). It panics if the lengths differ or a
// t is outside [0, T).
func (s *Schedule) VLBTerms(dst, mse []float64, x0, xt, epsTheta []float32, t []int32, batch int, opts ReverseOptions) {
	d := s.dims("VLBTerms", t, batch, x0, xt, epsTheta)
	if len(dst) != batch || (mse != nil && len(mse) != batch) {
		panic(fmt.Sprintf("diffusion: VLBTerms: len(dst) = %d, len(mse) = %d, want batch = %d", len(dst), len(mse), batch))
	}
	mean := make([]float32, d)
	predX0 := make([]float32, d)
	for b, tb := range t {
		lo, hi := b*d, (b+1)*d
		dst[b] = s.vlbTerm(mean, predX0, x0[lo:hi], xt[lo:hi], epsTheta[lo:hi], int(tb), opts)
		if mse != nil {
			mse[b] = meanSquaredDiff(predX0, x0[lo:hi])
		}
	}
}

// vlbTerm returns one sample's VLB term in bits/dim; mean is scratch of length D and predX0
// receives the predicted x0.
func (s *Schedule) vlbTerm(mean, predX0, x0, xt, eps []float32, t int, opts ReverseOptions) float64 {
	s.predictX0(predX0, xt, eps, t, !opts.NoClip)
	s.posteriorMean(mean, predX0, xt, t)
	modelLV := s.logVariance(opts.Variance, t)
	var sum float64
	if t == 0 {
		logScale := 0.5 * modelLV
		for i, m := range mean {
			sum -= DiscretizedGaussianLogLikelihood(float64(x0[i]), float64(m), logScale)
		}
	} else {
		c1, c2 := s.tab.PosteriorMeanCoef1[t], s.tab.PosteriorMeanCoef2[t]
		trueLV := s.tab.PosteriorLogVarianceClipped[t]
		for i, m := range mean {
			trueMean := float64(c1*float64(x0[i])) + float64(c2*float64(xt[i]))
			sum += NormalKL(trueMean, trueLV, float64(m), modelLV)
		}
	}
	return sum / float64(len(mean)) / math.Ln2
}

func meanSquaredDiff(a, b []float32) float64 {
	var sum float64
	for i := range a {
		r := float64(a[i]) - float64(b[i])
		sum += r * r
	}
	return sum / float64(len(a))
}

// BPD is the variational bound of a batch in bits per dimension (the original's calc_bpd_loop).
type BPD struct {
	Total []float64 // [B]: sum over t of Terms plus Prior, the bound -log p(x0) <= L of eq. 5
	Prior []float64 // [B]: L_T, PriorBPD
	Terms []float64 // [B, T] row-major: VLBTerms at t = 0..T-1 (t = 0 is the decoder NLL L_0)
	MSE   []float64 // [B, T] row-major: mean (predicted x0 - x0)^2 at each t
}

// CalcBPD evaluates the full variational bound of a batch x0 ([B, D], data in [-1, 1]) in bits per
// dimension, as the original's calc_bpd_loop: for t = T-1 down to 0 it draws x_t = QSample(x0,
// noise(., t, batch)), evaluates the model once, and records VLBTerms and the predicted-x0 MSE;
// then adds PriorBPD. That is T model evaluations of batch B. It panics if the lengths differ or
// the model returns a tensor of another length.
func (s *Schedule) CalcBPD(model EpsModel, x0 []float32, batch int, noise Noise, opts ReverseOptions) BPD {
	d := flatDims("CalcBPD", batch, x0)
	T := s.T()
	r := BPD{
		Total: make([]float64, batch), Prior: make([]float64, batch),
		Terms: make([]float64, batch*T), MSE: make([]float64, batch*T),
	}
	t := make([]int32, batch)
	eps := make([]float32, len(x0))
	xt := make([]float32, len(x0))
	mean := make([]float32, d)
	predX0 := make([]float32, len(x0))
	for step := T - 1; step >= 0; step-- {
		for b := range t {
			t[b] = int32(step)
		}
		noise(eps, step, batch)
		s.QSample(xt, x0, eps, t, batch)
		out := model(xt, t, batch)
		if len(out) != len(x0) {
			panic(fmt.Sprintf("diffusion: model returned %d values at t = %d, want %d", len(out), step, len(x0)))
		}
		for b := range batch {
			lo, hi := b*d, (b+1)*d
			r.Terms[b*T+step] = s.vlbTerm(mean, predX0[lo:hi], x0[lo:hi], xt[lo:hi], out[lo:hi], step, opts)
			r.MSE[b*T+step] = meanSquaredDiff(predX0[lo:hi], x0[lo:hi])
		}
		if opts.Progress != nil {
			opts.Progress(step, xt, predX0)
		}
	}
	s.PriorBPD(r.Prior, x0, batch)
	for b := range batch {
		sum := 0.0
		for _, v := range r.Terms[b*T : (b+1)*T] {
			sum += v
		}
		r.Total[b] = sum + r.Prior[b]
	}
	return r
}
