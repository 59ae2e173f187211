// Package diffusion is the mathematics of Denoising Diffusion Probabilistic Models (Ho, Jain,
// Abbeel, NeurIPS 2020), computed as the reference implementation computes it
// (hojonathanho/diffusion, diffusion_tf/diffusion_utils_2.py, nn.py, utils.py).
//
// It is pure: no I/O, no clock, no global random number generator. Noise comes in as slices or
// from an *rng.Source the caller gives, and the network comes in as an EpsModel function.
//
// Tensors are float32 NCHW slices, row-major: a batch of B images with C channels of H x W pixels
// is one []float32 of length B*C*H*W, and per-sample timesteps are one []int32 of length B with
// every value in [0, T). The schedule tables are computed once in float64 and read as float32
// where they multiply float32 tensors, as the original does. Lengths that do not match and
// timesteps outside [0, T) are programmer errors and panic with a "diffusion: " message;
// invalid schedule parameters are returned as errors.
package diffusion
