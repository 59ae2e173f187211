package nn

import (
	"math"
	"unsafe"
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
// correctly rounded value for x in [-87, 88]. Below -87 it returns 0 (no subnormals), above 88
// +Inf, and NaN for NaN.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375
		ln2lo = -2.12194440e-4
	)
	switch {
	case x > 88:
		return float32(math.Inf(1))
	case x < -87:
		return 0
	case x != x:
		return x
	}
	// k = round(x log2 e), computed without a floor call: the shift makes the argument positive.
	ki := int32(x*log2e+128.5) - 128
	k := float32(ki)
	r := x - k*ln2hi - k*ln2lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	return y * math.Float32frombits(uint32(ki+127)<<23)
}
