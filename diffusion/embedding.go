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
	freq := make([]float32, half)
	timestepFrequencies(freq)
	for b, tb := range t {
		row := dst[b*dim : (b+1)*dim]
		tf := float32(tb)
		for j, f := range freq {
			arg := float64(tf * f) // float32 product, as tf.cast(t)[:, None] * emb[None, :]
			row[j] = float32(math.Sin(arg))
			row[half+j] = float32(math.Cos(arg))
		}
		if dim%2 == 1 {
			row[dim-1] = 0
		}
	}
}

// timestepFrequencies fills freq (length half) with the float32 frequencies exp(-j*log(10000)/(half-1)).
func timestepFrequencies(freq []float32) {
	half := len(freq)
	e := float32(math.Log(10000) / float64(half-1)) // a Python float, cast to float32 by TF
	for j := range freq {
		freq[j] = float32(math.Exp(float64(float32(j) * -e)))
	}
}
