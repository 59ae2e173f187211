// Package diffusion is the mathematics of Denoising Diffusion Probabilistic Models (Ho, Jain,
// Abbeel, NeurIPS 2020), computed as the reference implementation computes it
// (hojonathanho/diffusion, diffusion_tf/diffusion_utils_2.py, nn.py, utils.py).
//
// It is pure: no I/O, no clock, no global random number generator. Noise comes in as slices or
// as a Noise function (StreamNoise draws it from internal/rng, keyed by seed, image and step), and
// the network comes in as an EpsModel function.
//
// Tensors are float32 NCHW slices, row-major: a batch of B images with C channels of H x W pixels
// is one []float32 of length B*C*H*W ("[B, D]" below, D = C*H*W), and per-sample timesteps are one
// []int32 of length B with every value in [0, T). Timestep index t is the paper's t+1, as in the
// original code: QSample at t = 0 gives the paper's x_1, and the reverse step at t maps x_{t+1}
// to x_t, so the step at t = 0 produces x_0.
//
// A Schedule's tables are computed once in float64 and read as float32 where they multiply
// float32 tensors, as the original does; the variational bound is accumulated in float64.
// Lengths that do not match and timesteps outside [0, T) are programmer errors and panic with a
// "diffusion: " message; invalid schedule parameters are returned as errors wrapping
// ErrInvalidSchedule.
//
// The parts, by paper section:
//   - forward process (eq. 4) and posterior (eqs. 6-7): NewSchedule, QSample, QPosteriorMean;
//   - reverse process with the eps parameterization (eq. 11): PredictX0, PMeanVariance, PSample;
//   - training objective (eq. 14): LSimple, LSimpleGrad;
//   - variational bound (eq. 5, eq. 13) in bits/dim: CalcBPD, VLBTerms, PriorBPD, NormalKL,
//     DiscretizedGaussianLogLikelihood;
//   - sampling (Algorithm 2), Fig. 6 and Fig. 8: Sample, Denoise, SampleProgressive, Interpolate,
//     ToUint8;
//   - the network's timestep input: TimestepEmbedding.
package diffusion
