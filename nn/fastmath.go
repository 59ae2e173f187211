package nn

import (
	"math"
	"unsafe"

	"ddpm/nn/internal/vecf32"
)

// expT is e^x: math.Exp for float64 (the reference path keeps full precision) and expf for
// float32, where math.Exp's float64 evaluation would cost more than the rest of a SiLU or
// softmax element.
func expT[T Float](x T) T {
	var z T
	if unsafe.Sizeof(z) == 4 { // a constant per instantiation: the other branch is compiled away
		return T(expf(float32(x)))
	}
	return T(math.Exp(float64(x)))
}

// expf is e^x in float32 arithmetic (Cephes expf: x = k ln2 + r with |r| <= ln2/2, a degree-5
// minimax polynomial for e^r, times 2^k built in the exponent bits), within 2 ulp of the
// correctly rounded value for x in [-87, 88]. The argument is clamped to that range first (so
// e^-87 ~ 1.6e-38 stands for anything smaller and e^88 ~ 1.7e38 for anything larger) and NaN
// stays NaN. It is branch-free and small enough for the compiler to inline into the SiLU and
// softmax loops.
func expf(x float32) float32 {
	return expfCore(max(min(x, 88), -87))
}

// expfCore is expf without the clamp, for x in [-87, 88]; small enough to inline into loops.
func expfCore(x float32) float32 {
	// k = round(x log2 e), without a floor call: the shift makes the argument positive.
	ki := int32(x*1.44269504088896341+128.5) - 128
	k := float32(ki)
	r := x - k*0.693359375 + k*2.12194440e-4 // x - k ln2 in two parts (Cody-Waite)
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	return ((p*r+1)*r + 1) * math.Float32frombits(uint32(ki+127)<<23)
}

// siluRow32 sets sig[i] = sigmoid(z) and y[i] = z*sigmoid(z) for z = x[i]*sc + sh: the fused
// GroupNorm+SiLU output loop in float32 with the exponential inlined. Where the CPU has
// AVX-512, all but the last len(x)%16 elements run 16 at a time (vecf32, the same bits).
func siluRow32(y, sig, x []float32, sc, sh float32) {
	y, sig = y[:len(x)], sig[:len(x)]
	d := vecf32.SiLU16(y, sig, x, sc, sh)
	siluRowScalar(y[d:], sig[d:], x[d:], sc, sh)
}

// siluRowScalar is siluRow32 one element at a time.
func siluRowScalar(y, sig, x []float32, sc, sh float32) {
	y, sig = y[:len(x)], sig[:len(x)]
	for i, v := range x {
		z := v*sc + sh
		t := -z
		if t > 88 {
			t = 88
		} else if t < -87 {
			t = -87
		}
		g := 1 / (1 + expfCore(t))
		sig[i] = g
		y[i] = z * g
	}
}

// expShiftRow32 replaces each v of row by e^(v - mx) (mx >= every v: the softmax numerators),
// 16 at a time where the CPU has AVX-512 (vecf32, the same bits).
func expShiftRow32(row []float32, mx float32) {
	d := vecf32.ExpShift16(row, mx)
	expShiftRowScalar(row[d:], mx)
}

// expShiftRowScalar is expShiftRow32 one element at a time.
func expShiftRowScalar(row []float32, mx float32) {
	for j, v := range row {
		t := v - mx
		if t < -87 {
			t = -87
		}
		row[j] = expfCore(t)
	}
}
