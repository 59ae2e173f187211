package diffusion

import (
	"fmt"
	"math"
)

// TimestepEmbedding writes the sinusoidal embedding of each timestep in t into dst, which is
// [B, dim] row-major with B = len(t).
//
// It is the original's get_timestep_embedding (diffusion_tf/nn.py; the Transformer's positional
// encoding, Vaswani et al. 2017) computed in float32 exactly as the TensorFlow code does:
//
//	half = dim/2, e = float32(log(10000) / (half-1)), freq[j] = exp(-e*j) for j = 0..half-1,
//	row b = [sin(t[b]*freq[0..half-1]), cos(t[b]*freq[0..half-1])], then a 0 if dim is odd.
//
// Every intermediate (e, j*e, freq, t*freq, sin, cos) is rounded to float32 as the original's
// float32 tensors are, so the argument t*freq carries float32 rounding (about 6e-5 at t = 999);
// the result differs from a float64 evaluation by up to about 1e-4 at large t, and that is what
// the original network saw.
//
// It panics if dim < 4 (the original divides by half-1) or len(dst) != len(t)*dim.
func TimestepEmbedding(dst []float32, t []int32, dim int) {
	if dim < 4 {
		panic(fmt.Sprintf("diffusion: TimestepEmbedding: dim %d < 4", dim))
	}
	if len(dst) != len(t)*dim {
		panic(fmt.Sprintf("diffusion: TimestepEmbedding: len(dst) = %d, want len(t)*dim = %d*%d", len(dst), len(t), dim))
	}
	half := dim / 2
	e := frequencyExponent(half)
	// Frequency outermost, so that no table is allocated: each freq[j] is computed once.
	for j := range half {
		f := frequency(e, j)
		for b, tb := range t {
			arg := float64(float32(tb) * f) // float32 product, as tf.cast(t)[:, None] * emb[None, :]
			dst[b*dim+j] = float32(math.Sin(arg))
			dst[b*dim+half+j] = float32(math.Cos(arg))
		}
	}
	if dim%2 == 1 {
		for b := range t {
			dst[b*dim+dim-1] = 0
		}
	}
}

// frequencyExponent is the original's float32 e = log(10000)/(half-1) (a Python float cast to
// float32 by TF).
func frequencyExponent(half int) float32 {
	return float32(math.Log(10000) / float64(half-1))
}

// frequency is the float32 frequency exp(-j*e) of embedding column j.
func frequency(e float32, j int) float32 {
	return float32(math.Exp(float64(float32(j) * -e)))
}
