package diffusion

import "fmt"

// dims checks a batch of tensors against batch and t and returns D, the values per sample. Every
// slice in xs must have the same length B*D with B = batch = len(t), and every t in [0, T).
func (s *Schedule) dims(fn string, t []int32, batch int, xs ...[]float32) int {
	d := flatDims(fn, batch, xs...)
	if len(t) != batch {
		panic(fmt.Sprintf("diffusion: %s: len(t) = %d, want batch = %d", fn, len(t), batch))
	}
	T := s.T()
	for b, tb := range t {
		if tb < 0 || int(tb) >= T {
			panic(fmt.Sprintf("diffusion: %s: t[%d] = %d outside [0, %d)", fn, b, tb, T))
		}
	}
	return d
}

// QSample writes x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) eps (eq. 4; the original's
// q_sample) into dst. dst, x0 and eps are [B, D] with B = batch = len(t); dst may alias x0 or
// eps. Coefficients are the float32 tables. It panics if the lengths differ or a t is outside
// [0, T).
func (s *Schedule) QSample(dst, x0, eps []float32, t []int32, batch int) {
	d := s.dims("QSample", t, batch, dst, x0, eps)
	for b, tb := range t {
		ca, cb := s.sqrtAB32[tb], s.sqrt1mAB32[tb]
		for i := b * d; i < (b+1)*d; i++ {
			dst[i] = float32(ca*x0[i]) + float32(cb*eps[i])
		}
	}
}

// QPosteriorMean writes the mean of q(x_{t-1} | x_t, x0), mu-tilde = coef1_t x0 + coef2_t x_t
// (eq. 7; the original's q_posterior_mean_variance) into dst. Its variance and clipped log
// variance are Tables().PosteriorVariance[t] and PosteriorLogVarianceClipped[t]. dst, x0 and xt
// are [B, D] with B = batch = len(t); dst may alias either input. It panics if the lengths differ
// or a t is outside [0, T).
func (s *Schedule) QPosteriorMean(dst, x0, xt []float32, t []int32, batch int) {
	d := s.dims("QPosteriorMean", t, batch, dst, x0, xt)
	for b, tb := range t {
		s.posteriorMean(dst[b*d:(b+1)*d], x0[b*d:(b+1)*d], xt[b*d:(b+1)*d], int(tb))
	}
}

func (s *Schedule) posteriorMean(dst, x0, xt []float32, t int) {
	c1, c2 := s.coef1_32[t], s.coef2_32[t]
	for i := range dst {
		dst[i] = float32(c1*x0[i]) + float32(c2*xt[i])
	}
}

// PredictX0 writes x0 = sqrt(1/alphabar_t) x_t - sqrt(1/alphabar_t - 1) eps, the inversion of
// eq. 4 (the original's _predict_xstart_from_eps), into dst. dst, xt and eps are [B, D] with
// B = batch = len(t); dst may alias either input. It panics if the lengths differ or a t is
// outside [0, T).
func (s *Schedule) PredictX0(dst, xt, eps []float32, t []int32, batch int) {
	d := s.dims("PredictX0", t, batch, dst, xt, eps)
	for b, tb := range t {
		s.predictX0(dst[b*d:(b+1)*d], xt[b*d:(b+1)*d], eps[b*d:(b+1)*d], int(tb), false)
	}
}

func (s *Schedule) predictX0(dst, xt, eps []float32, t int, clip bool) {
	ca, cb := s.recipAB32[t], s.recipm1AB32[t]
	for i := range dst {
		v := float32(ca*xt[i]) - float32(cb*eps[i])
		if clip {
			v = min(max(v, -1), 1)
		}
		dst[i] = v
	}
}

// PMeanVariance computes the mean of the reverse process p_theta(x_{t-1} | x_t) with the eps
// parameterization (eq. 11, written as the original's p_mean_variance does it): the predicted
// x0 = PredictX0(x_t, eps_theta), clipped to [-1, 1] when clip is true, goes into predX0, and
// mean = mu-tilde(predX0, x_t) (eq. 7) into mean. The variance is fixed per t:
// ModelLogVariance(v, t). mean, predX0, xt and eps are [B, D] with B = batch = len(t); mean and
// predX0 must not alias each other or xt; predX0 may alias eps. It panics if the lengths differ
// or a t is outside [0, T).
func (s *Schedule) PMeanVariance(mean, predX0, xt, eps []float32, t []int32, batch int, clip bool) {
	d := s.dims("PMeanVariance", t, batch, mean, predX0, xt, eps)
	for b, tb := range t {
		lo, hi := b*d, (b+1)*d
		s.predictX0(predX0[lo:hi], xt[lo:hi], eps[lo:hi], int(tb), clip)
		s.posteriorMean(mean[lo:hi], predX0[lo:hi], xt[lo:hi], int(tb))
	}
}

// LSimple writes L_simple of each sample, mean over its D values of (eps - eps_theta)^2 (eq. 14;
// the original's training_losses with loss_type "noisepred", nn.meanflat), into dst, which has
// one entry per sample. eps and epsTheta are [B, D] with B = batch = len(dst). The sum is
// accumulated in float64. It panics if the lengths differ.
func LSimple(dst []float64, eps, epsTheta []float32, batch int) {
	d := flatDims("LSimple", batch, eps, epsTheta)
	if len(dst) != batch {
		panic(fmt.Sprintf("diffusion: LSimple: len(dst) = %d, want batch = %d", len(dst), batch))
	}
	for b := range batch {
		var sum float64
		for i := b * d; i < (b+1)*d; i++ {
			r := float64(epsTheta[i]) - float64(eps[i])
			sum += r * r
		}
		dst[b] = sum / float64(d)
	}
}

// LSimpleGrad writes the gradient of sum_b L_simple(b) with respect to eps_theta,
// 2 (eps_theta - eps) / D, into grad. grad, eps and epsTheta are [B, D]; grad may alias either
// input. Divide by the global batch size for the gradient of the batch mean. It panics if the
// lengths differ.
func LSimpleGrad(grad, eps, epsTheta []float32, batch int) {
	d := flatDims("LSimpleGrad", batch, grad, eps, epsTheta)
	scale := float32(2 / float64(d))
	for i := range grad {
		grad[i] = scale * (epsTheta[i] - eps[i])
	}
}

// flatDims checks that every slice has the same length, a positive multiple of batch, and returns
// the values per sample.
func flatDims(fn string, batch int, xs ...[]float32) int {
	if batch <= 0 {
		panic(fmt.Sprintf("diffusion: %s: batch %d <= 0", fn, batch))
	}
	n := len(xs[0])
	if n%batch != 0 || n == 0 {
		panic(fmt.Sprintf("diffusion: %s: tensor length %d is not a positive multiple of batch %d", fn, n, batch))
	}
	for i, x := range xs[1:] {
		if len(x) != n {
			panic(fmt.Sprintf("diffusion: %s: argument %d has length %d, want %d", fn, i+2, len(x), n))
		}
	}
	return n / batch
}
