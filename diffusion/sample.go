package diffusion

import (
	"fmt"
	"math"

	"ddpm/internal/rng"
)

// EpsModel is the network eps_theta(x_t, t) (eq. 11): given x_t, [B, C, H, W] flattened to
// B*C*H*W float32 values, and one timestep per sample (len(t) = batch = B), it returns the
// predicted noise with the same shape. It may return a buffer it owns and reuses; this package
// reads the result only until its next call to the model and never writes to it. It must not
// modify xt or t.
type EpsModel func(xt []float32, t []int32, batch int) []float32

// Noise fills dst, [B, D] row-major with B = batch, with standard normal noise for timestep t of
// a batch: t in [0, T) for the noise of step t, and t = T for the starting point x_T of the
// reverse process. Equal arguments must give equal noise.
type Noise func(dst []float32, t int, batch int)

// StreamNoise returns the Noise in which row b of a batch is image first+b and its noise at
// timestep t is the N(0, 1) sequence of rng.New(seed, rng.Stream(uint64(t), rng.Stream(first+b,
// purpose))) (FillNormal). So image i's noise depends only on (seed, purpose, i, t): not on the
// batch size, the batch's other images, or the order of the steps. Use rng.PurposeSampling for
// the reverse process and rng.PurposeNoise for the forward noise of CalcBPD.
func StreamNoise(seed, purpose, first uint64) Noise {
	return func(dst []float32, t int, batch int) {
		d := flatDims("StreamNoise", batch, dst)
		var src rng.Source
		for b := range batch {
			src.Reset(seed, rng.Stream(uint64(t), rng.Stream(first+uint64(b), purpose)))
			src.FillNormal(dst[b*d : (b+1)*d])
		}
	}
}

// SharedNoise returns the Noise that gives every row of a batch image's noise of StreamNoise(seed,
// purpose, image): the same draw for each row, as an interpolation row of paper Fig. 8 wants.
func SharedNoise(seed, purpose, image uint64) Noise {
	one := StreamNoise(seed, purpose, image)
	return func(dst []float32, t int, batch int) {
		d := flatDims("SharedNoise", batch, dst)
		one(dst[:d], t, 1)
		for b := 1; b < batch; b++ {
			copy(dst[b*d:(b+1)*d], dst[:d])
		}
	}
}

// ReverseOptions configure the reverse process p_theta(x_{t-1} | x_t). The zero value is the
// original's sampling setting for CIFAR-10: fixed-large variance, predicted x0 clipped to [-1, 1].
type ReverseOptions struct {
	Variance Variance // sigma_t^2: FixedLarge (beta_t) or FixedSmall (beta-tilde_t)
	NoClip   bool     // do not clip the predicted x0 to [-1, 1] (the original's clip_denoised=False)
	// Progress, if not nil, is called after each model evaluation with the timestep t, the batch
	// x after the step (x_{t-1} in the paper's numbering, or the input x_t for CalcBPD) and the
	// predicted x0, both [B, D]. The slices are valid only during the call.
	Progress func(t int, x, predX0 []float32)
}

// PSample is one step of Algorithm 2 (the original's p_sample): with mu and sigma_t^2 from
// PMeanVariance(xt, eps_theta) and ModelLogVariance(opts.Variance, t), it writes
// x_{t-1} = mu + sigma_t z into dst, adding no noise where t = 0, and the predicted x0 into
// predX0. dst, predX0, xt, eps and z are [B, D] with B = batch = len(t); z may be nil when every t
// is 0. dst may alias xt; predX0 may alias eps. It panics if the lengths differ or a t is outside
// [0, T).
func (s *Schedule) PSample(dst, predX0, xt, eps, z []float32, t []int32, batch int, opts ReverseOptions) {
	d := s.dims("PSample", t, batch, dst, predX0, xt, eps)
	needNoise := false
	for _, tb := range t {
		needNoise = needNoise || tb != 0
	}
	if needNoise && len(z) != len(xt) {
		panic(fmt.Sprintf("diffusion: PSample: len(z) = %d, want %d", len(z), len(xt)))
	}
	sigma := s.sigmaTable(opts.Variance)
	for b, tb := range t {
		lo, hi := b*d, (b+1)*d
		x := xt[lo:hi]
		px := predX0[lo:hi]
		s.predictX0(px, x, eps[lo:hi], int(tb), !opts.NoClip)
		out := dst[lo:hi]
		s.posteriorMean(out, px, x, int(tb)) // out may alias x: element i reads x[i] before writing out[i]
		if tb == 0 {
			continue // Algorithm 2, line 3: z = 0 at the last step
		}
		sg := sigma[tb]
		for i, zi := range z[lo:hi] {
			out[i] += sg * zi
		}
	}
}

func (s *Schedule) sigmaTable(v Variance) []float32 {
	if v != FixedLarge && v != FixedSmall {
		panic(fmt.Sprintf("diffusion: unknown Variance %d", int(v)))
	}
	return s.sigma32[v]
}

// Denoise runs the reverse process (Algorithm 2, lines 2-5) from x at timestep from down to 0,
// in place: x holds x_{from+1} in the paper's numbering (x_T when from = T-1) on entry and x_0 on
// return. x is [B, D] with B = batch. The noise z of step t is noise(., t, batch); none is drawn
// at t = 0. It panics if from is outside [0, T), the lengths differ, or the model returns a
// tensor of another length.
func (s *Schedule) Denoise(model EpsModel, x []float32, from int, batch int, noise Noise, opts ReverseOptions) {
	s.checkT(from)
	flatDims("Denoise", batch, x)
	t := make([]int32, batch)
	predX0 := make([]float32, len(x))
	z := make([]float32, len(x))
	for step := from; step >= 0; step-- {
		for b := range t {
			t[b] = int32(step)
		}
		eps := model(x, t, batch)
		if len(eps) != len(x) {
			panic(fmt.Sprintf("diffusion: model returned %d values at t = %d, want %d", len(eps), step, len(x)))
		}
		zs := z
		if step > 0 {
			noise(z, step, batch)
		} else {
			zs = nil
		}
		s.PSample(x, predX0, x, eps, zs, t, batch, opts)
		if opts.Progress != nil {
			opts.Progress(step, x, predX0)
		}
	}
}

// Shape is the NCHW shape of a batch of images: [B, C, H, W].
type Shape [4]int

// Len returns B*C*H*W.
func (sh Shape) Len() int { return sh[0] * sh[1] * sh[2] * sh[3] }

func (sh Shape) check(fn string) {
	for _, v := range sh {
		if v <= 0 {
			panic(fmt.Sprintf("diffusion: %s: shape %v has a non-positive dimension", fn, sh))
		}
	}
}

// Sample draws a batch of images from the model (Algorithm 2; the original's p_sample_loop):
// x_T = noise(., T, batch), then T steps down to t = 0. It returns x_0, shape sh flattened
// (values in [-1, 1] unless opts.NoClip). It panics if a dimension of sh is not positive or the
// model returns a tensor of another length.
func (s *Schedule) Sample(model EpsModel, sh Shape, noise Noise, opts ReverseOptions) []float32 {
	sh.check("Sample")
	x := make([]float32, sh.Len())
	noise(x, s.T(), sh[0])
	s.Denoise(model, x, s.T()-1, sh[0], noise, opts)
	return x
}

// Progressive is the result of SampleProgressive.
type Progressive struct {
	X0 []float32 // the samples x_0, [B, C, H, W]
	// Steps are the timesteps at which PredX0 was recorded, in sampling order (descending):
	// k*every for k = T/every-1 down to 0, the original's record slots.
	Steps  []int
	PredX0 [][]float32 // PredX0[i] is the predicted x0 at Steps[i], [B, C, H, W]
	Xt     [][]float32 // Xt[i] is the sample right after the step at Steps[i], [B, C, H, W]
}

// SampleProgressive is Sample that also records the predicted x0 (and the current sample) every
// `every` steps, for paper Fig. 6 (the original's p_sample_loop_progressive with
// include_xstartpred_freq = every). It panics if every is outside [1, T] or as Sample does.
func (s *Schedule) SampleProgressive(model EpsModel, sh Shape, noise Noise, every int, opts ReverseOptions) Progressive {
	if every < 1 || every > s.T() {
		panic(fmt.Sprintf("diffusion: SampleProgressive: every = %d outside [1, %d]", every, s.T()))
	}
	slots := s.T() / every
	var p Progressive
	inner := opts.Progress
	opts.Progress = func(t int, x, predX0 []float32) {
		if t%every == 0 && t/every < slots {
			p.Steps = append(p.Steps, t)
			p.PredX0 = append(p.PredX0, append([]float32(nil), predX0...))
			p.Xt = append(p.Xt, append([]float32(nil), x...))
		}
		if inner != nil {
			inner(t, x, predX0)
		}
	}
	p.X0 = s.Sample(model, sh, noise, opts)
	return p
}

// Interpolate is the interpolation in latent space of paper Fig. 8: the images xa and xb (each
// [C, H, W] flattened to D values) are diffused to timestep t with the same noise eps (D values,
// eq. 4), mixed as (1 - lambda) x_t + lambda x'_t for each lambda, and each mixture is denoised
// by the reverse process from t (Denoise). It returns [len(lambdas), D]. Row i's reverse noise is
// noise's row i of a batch of len(lambdas); SharedNoise gives every row the same. It panics if
// the lengths differ, lambdas is empty, or t is outside [0, T).
func (s *Schedule) Interpolate(model EpsModel, xa, xb, eps []float32, lambdas []float64, t int, noise Noise, opts ReverseOptions) []float32 {
	s.checkT(t)
	d := flatDims("Interpolate", 1, xa, xb, eps)
	n := len(lambdas)
	if n == 0 {
		panic("diffusion: Interpolate: no lambdas")
	}
	ta := make([]float32, d)
	tb := make([]float32, d)
	tt := []int32{int32(t)}
	s.QSample(ta, xa, eps, tt, 1)
	s.QSample(tb, xb, eps, tt, 1)
	x := make([]float32, n*d)
	for i, lam := range lambdas {
		l := float32(lam)
		row := x[i*d : (i+1)*d]
		for j := range row {
			row[j] = float32((1-l)*ta[j]) + float32(l*tb[j])
		}
	}
	s.Denoise(model, x, t, n, noise, opts)
	return x
}

// ToUint8 converts samples in [-1, 1] to 8-bit pixel values, round((x + 1) * 127.5) clamped to
// [0, 255] (halves round away from zero; NaN maps to 0), into dst. It panics if the lengths
// differ.
func ToUint8(dst []uint8, x []float32) {
	if len(dst) != len(x) {
		panic(fmt.Sprintf("diffusion: ToUint8: len(dst) = %d, want len(x) = %d", len(dst), len(x)))
	}
	for i, v := range x {
		f := math.Round((float64(v) + 1) * 127.5)
		switch {
		case f >= 255:
			dst[i] = 255
		case f > 0:
			dst[i] = uint8(f)
		default: // negative or NaN
			dst[i] = 0
		}
	}
}
