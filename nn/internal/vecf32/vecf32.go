// Package vecf32 holds AVX-512 loops over float32 rows for the layer engine's elementwise
// layers (Go assembly cannot live in nn itself, which uses cgo). Each function handles the
// longest prefix of its rows whose length is a multiple of 16 and returns that length; the
// caller finishes the rest with its scalar loop. The lanes compute exactly the float32
// operations of nn's scalar code, in the same order and without fused multiply-adds, so the
// results are bit-identical to it (checked by the tests). Where Available is false they do
// nothing and return 0.
package vecf32

// SiLU16 sets, for i < the returned length, sig[i] = 1/(1 + e^t) and y[i] = z*sig[i] with
// z = x[i]*sc + sh and t = -z clamped to [-87, 88], e^t as nn's expfCore. It panics unless
// len(y) and len(sig) are at least len(x).
func SiLU16(y, sig, x []float32, sc, sh float32) int {
	n := len(x) &^ 15
	if !Available || n == 0 {
		return 0
	}
	_, _ = y[n-1], sig[n-1]
	silu16(&y[0], &sig[0], &x[0], n, sc, sh)
	return n
}

// ExpShift16 replaces row[i], for i < the returned length, by e^t with t = row[i] - mx clamped
// below at -87, e^t as nn's expfCore (the softmax numerators).
func ExpShift16(row []float32, mx float32) int {
	n := len(row) &^ 15
	if !Available || n == 0 {
		return 0
	}
	expShift16(&row[0], n, mx)
	return n
}
