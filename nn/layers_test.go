package nn

import (
	"fmt"
	"math"
	"testing"
)

// naiveConv is the definition of Conv2d's forward pass, written as the direct sum.
func naiveConv(c *Conv2d[float64], x []float64, b, h, w int) []float64 {
	ho, wo := c.OutSize(h, w)
	y := make([]float64, b*c.Cout*ho*wo)
	for s := 0; s < b; s++ {
		for o := 0; o < c.Cout; o++ {
			for i := 0; i < ho; i++ {
				for j := 0; j < wo; j++ {
					acc := c.Bias.W[o]
					for ci := 0; ci < c.Cin; ci++ {
						for u := 0; u < c.K; u++ {
							for v := 0; v < c.K; v++ {
								iy, ix := i*c.Stride+u-c.Pad[0], j*c.Stride+v-c.Pad[1]
								if iy < 0 || iy >= h || ix < 0 || ix >= w {
									continue
								}
								acc += c.Weight.W[((o*c.Cin+ci)*c.K+u)*c.K+v] * x[((s*c.Cin+ci)*h+iy)*w+ix]
							}
						}
					}
					y[((s*c.Cout+o)*ho+i)*wo+j] = acc
				}
			}
		}
	}
	return y
}

func TestConv2d(t *testing.T) {
	cases := []struct {
		name                 string
		cin, cout, k, stride int
		pad                  [4]int
		h, w, ho, wo         int
	}{
		{"3x3 same", 3, 4, 3, 1, [4]int{1, 1, 1, 1}, 5, 6, 5, 6},
		{"3x3 stride 2 TF SAME", 3, 4, 3, 2, [4]int{0, 0, 1, 1}, 6, 8, 3, 4},
		{"3x3 stride 2 odd", 2, 3, 3, 2, [4]int{0, 0, 1, 1}, 5, 7, 2, 3},
		{"1x1", 5, 3, 1, 1, [4]int{}, 4, 3, 4, 3},
		{"3x3 valid", 2, 2, 3, 1, [4]int{}, 4, 5, 2, 3},
		// Stride-1 "same" shapes take the shifted-copy im2col/col2im; these probe its edges.
		{"5x5 same", 3, 2, 5, 1, [4]int{2, 2, 2, 2}, 6, 5, 6, 5},
		{"2x2 same asymmetric", 2, 3, 2, 1, [4]int{0, 1, 1, 0}, 4, 3, 4, 3},
		{"3x3 same 1 wide", 2, 2, 3, 1, [4]int{1, 1, 1, 1}, 4, 1, 4, 1},
		{"3x3 same 1x1", 2, 2, 3, 1, [4]int{1, 1, 1, 1}, 1, 1, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRand(1)
			var a Arena[float64]
			var ws Workspace[float64]
			c := NewConv2d(&a, &ws, "conv", tc.cin, tc.cout, tc.k, tc.stride, tc.pad)
			a.Alloc()
			fillParams(r, &a)
			const b = 2
			if ho, wo := c.OutSize(tc.h, tc.w); ho != tc.ho || wo != tc.wo {
				t.Fatalf("OutSize = %dx%d, want %dx%d", ho, wo, tc.ho, tc.wo)
			}
			x := randSlice(r, b*tc.cin*tc.h*tc.w)
			rr := randSlice(r, b*tc.cout*tc.ho*tc.wo)
			y := c.Forward(x, b, tc.h, tc.w)
			want := naiveConv(c, x, b, tc.h, tc.w)
			for i := range y {
				if math.Abs(y[i]-want[i]) > 1e-12 {
					t.Fatalf("y[%d] = %g, direct sum %g", i, y[i], want[i])
				}
			}
			dx := copyOf(c.Backward(rr))
			loss := func() float64 { return dot(c.Forward(x, b, tc.h, tc.w), rr) }
			checkFD(t, "dx", x, dx, loss)
			checkFD(t, "dW", c.Weight.W, copyOf(c.Weight.G), loss)
			checkFD(t, "db", c.Bias.W, copyOf(c.Bias.G), loss)
		})
	}
}

// TestConv2dFloat32 checks the float32 instantiation (blas32) against the float64 one.
func TestConv2dFloat32(t *testing.T) {
	r := newRand(2)
	var a64 Arena[float64]
	var ws64 Workspace[float64]
	var a32 Arena[float32]
	var ws32 Workspace[float32]
	c64 := NewConv2d(&a64, &ws64, "c", 8, 16, 3, 1, [4]int{1, 1, 1, 1})
	c32 := NewConv2d(&a32, &ws32, "c", 8, 16, 3, 1, [4]int{1, 1, 1, 1})
	a64.Alloc()
	a32.Alloc()
	fillParams(r, &a64)
	for i, v := range a64.Data() {
		a32.Data()[i] = float32(v)
	}
	x := randSlice(r, 3*8*9*9)
	x32 := make([]float32, len(x))
	for i, v := range x {
		x32[i] = float32(v)
	}
	y64 := c64.Forward(x, 3, 9, 9)
	y32 := c32.Forward(x32, 3, 9, 9)
	for i := range y64 {
		if math.Abs(float64(y32[i])-y64[i]) > 1e-5*(1+math.Abs(y64[i])) {
			t.Fatalf("y32[%d] = %g, y64 %g", i, y32[i], y64[i])
		}
	}
	dx64 := c64.Backward(y64)
	dx32 := c32.Backward(y32)
	for i := range dx64 {
		if math.Abs(float64(dx32[i])-dx64[i]) > 1e-4*(1+math.Abs(dx64[i])) {
			t.Fatalf("dx32[%d] = %g, dx64 %g", i, dx32[i], dx64[i])
		}
	}
}

func TestGroupNorm(t *testing.T) {
	for _, silu := range []bool{false, true} {
		r := newRand(3)
		var a Arena[float64]
		g := NewGroupNorm(&a, "gn", 6, 3, 1e-5, silu)
		a.Alloc()
		fillParams(r, &a)
		const b, p = 2, 7
		x := randSlice(r, b*6*p)
		for i := range x {
			x[i] = 3*x[i] + 1 // a mean and scale the normalization must remove
		}
		rr := randSlice(r, len(x))
		y := g.Forward(x, b, p)
		// Direct definition for one element: sample 1, channel 3 (group 1), position 2.
		var mean, v float64
		for c := 2; c < 4; c++ {
			for i := 0; i < p; i++ {
				mean += x[(1*6+c)*p+i]
			}
		}
		mean /= 2 * p
		for c := 2; c < 4; c++ {
			for i := 0; i < p; i++ {
				d := x[(1*6+c)*p+i] - mean
				v += d * d
			}
		}
		v /= 2 * p
		z := (x[(6+3)*p+2]-mean)/math.Sqrt(v+1e-5)*g.Gamma.W[3] + g.Beta.W[3]
		if silu {
			z = z / (1 + math.Exp(-z))
		}
		if got := y[(6+3)*p+2]; math.Abs(got-z) > 1e-12 {
			t.Fatalf("silu=%v: y = %.15g, definition %.15g", silu, got, z)
		}
		dx := copyOf(g.Backward(rr))
		loss := func() float64 { return dot(g.Forward(x, b, p), rr) }
		checkFD(t, "dx", x, dx, loss)
		checkFD(t, "dgamma", g.Gamma.W, copyOf(g.Gamma.G), loss)
		checkFD(t, "dbeta", g.Beta.W, copyOf(g.Beta.G), loss)
	}
}

func TestLinearAndSiLU(t *testing.T) {
	r := newRand(4)
	var a Arena[float64]
	l := NewLinear(&a, "fc", 5, 4)
	a.Alloc()
	fillParams(r, &a)
	var act SiLU[float64]
	const b = 3
	x := randSlice(r, b*5)
	rr := randSlice(r, b*4)
	fwd := func() []float64 { return act.Forward(l.Forward(x, b)) }
	y := fwd()
	// y[1,2] by definition.
	z := l.Bias.W[2]
	for i := 0; i < 5; i++ {
		z += l.Weight.W[2*5+i] * x[5+i]
	}
	if want := z / (1 + math.Exp(-z)); math.Abs(y[4+2]-want) > 1e-12 {
		t.Fatalf("y[1,2] = %g, want %g", y[6], want)
	}
	dx := copyOf(l.Backward(act.Backward(rr)))
	loss := func() float64 { return dot(fwd(), rr) }
	checkFD(t, "dx", x, dx, loss)
	checkFD(t, "dW", l.Weight.W, copyOf(l.Weight.G), loss)
	checkFD(t, "db", l.Bias.W, copyOf(l.Bias.G), loss)
}

func TestAttention(t *testing.T) {
	r := newRand(5)
	const b, c, p = 2, 3, 5
	at := Attention[float64]{C: c}
	q, k, v := randSlice(r, b*c*p), randSlice(r, b*c*p), randSlice(r, b*c*p)
	rr := randSlice(r, b*c*p)
	y := at.Forward(q, k, v, b, p)
	// Direct definition for sample 1, channel 2, position 3.
	var w [p]float64
	var sum float64
	for j := 0; j < p; j++ {
		for cc := 0; cc < c; cc++ {
			w[j] += q[(c+cc)*p+3] * k[(c+cc)*p+j]
		}
		w[j] = math.Exp(w[j] / math.Sqrt(c))
		sum += w[j]
	}
	var want float64
	for j := 0; j < p; j++ {
		want += w[j] / sum * v[(c+2)*p+j]
	}
	if got := y[(c+2)*p+3]; math.Abs(got-want) > 1e-12 {
		t.Fatalf("y = %g, want %g", got, want)
	}
	dq, dk, dv := at.Backward(rr)
	dq, dk, dv = copyOf(dq), copyOf(dk), copyOf(dv)
	loss := func() float64 { return dot(at.Forward(q, k, v, b, p), rr) }
	checkFD(t, "dq", q, dq, loss)
	checkFD(t, "dk", k, dk, loss)
	checkFD(t, "dv", v, dv, loss)
}

func TestUpsampleConcat(t *testing.T) {
	r := newRand(6)
	var up Upsample2x[float64]
	var cat Concat[float64]
	const b = 2
	x := randSlice(r, b*2*3*2)  // [2, 2, 3, 2]
	s := randSlice(r, b*1*6*4)  // [2, 1, 6, 4]
	rr := randSlice(r, b*3*6*4) // [2, 3, 6, 4]
	fwd := func() []float64 { return cat.Forward(up.Forward(x, b, 2, 3, 2), s, b, 2, 1, 24) }
	y := fwd()
	// y[1, 1, 4, 3] = x[1, 1, 2, 1]; y[1, 2, 5, 0] = s[1, 0, 5, 0].
	if got, want := y[((1*3+1)*6+4)*4+3], x[((1*2+1)*3+2)*2+1]; got != want {
		t.Fatalf("upsampled value %g, want %g", got, want)
	}
	if got, want := y[((1*3+2)*6+5)*4+0], s[((1*1+0)*6+5)*4+0]; got != want {
		t.Fatalf("concatenated value %g, want %g", got, want)
	}
	da, ds := cat.Backward(rr)
	ds = copyOf(ds)
	dx := copyOf(up.Backward(da))
	loss := func() float64 { return dot(fwd(), rr) }
	checkFD(t, "dx", x, dx, loss)
	checkFD(t, "ds", s, ds, loss)
}

func TestDropout(t *testing.T) {
	r := newRand(7)
	d := Dropout[float64]{P: 0.25, Layer: 3}
	const per = 4000
	x := randSlice(r, 2*per)
	rr := randSlice(r, 2*per)
	pos := []uint64{17, 99}
	y := copyOf(d.Forward(x, 42, pos))
	dropped := 0
	for i, v := range y {
		switch {
		case v == 0:
			dropped++
		case math.Abs(v-x[i]/0.75) > 1e-15:
			t.Fatalf("kept element %d = %g, want x/(1-p) = %g", i, v, x[i]/0.75)
		}
	}
	if frac := float64(dropped) / float64(len(y)); math.Abs(frac-0.25) > 0.02 {
		t.Fatalf("dropped fraction %g, want 0.25 +- 0.02", frac)
	}
	// The mask of a sample depends only on (seed, position, layer): sample 99 alone gets the same.
	y1 := d.Forward(x[per:], 42, []uint64{99})
	for i := range y1 {
		if y1[i] != y[per+i] {
			t.Fatalf("mask of position 99 depends on its batch (element %d)", i)
		}
	}
	d.Forward(x, 42, pos)
	dx := copyOf(d.Backward(rr))
	checkFD(t, "dx", x, dx, func() float64 { return dot(d.Forward(x, 42, pos), rr) })
	// Evaluation mode is the identity.
	if got := d.Forward(x, 42, nil); &got[0] != &x[0] {
		t.Fatal("eval-mode dropout did not return its input")
	}
}

// TestGroupNormForwardInto checks that ForwardInto gives Forward's bits (float32, rows long
// enough for the 16-lane SiLU and a scalar tail; with and without SiLU), leaves Forward's own
// buffer alone, and makes a following Backward panic.
func TestGroupNormForwardInto(t *testing.T) {
	for _, silu := range []bool{false, true} {
		r := newRand(4)
		var a Arena[float32]
		g := NewGroupNorm(&a, "gn", 8, 4, 1e-5, silu)
		a.Alloc()
		for i := range a.Data() {
			a.Data()[i] = float32(r.NormFloat64())
		}
		const b, p = 3, 37
		x := make([]float32, b*8*p)
		for i := range x {
			x[i] = float32(3*r.NormFloat64() + 1)
		}
		want := append([]float32(nil), g.Forward(x, b, p)...)
		own := g.Forward(x, b, p)
		out := make([]float32, len(x)+5)
		got := g.ForwardInto(out, x, b, p)
		if len(got) != len(x) || &got[0] != &out[0] {
			t.Fatalf("silu=%v: ForwardInto returned %d values not at the start of out", silu, len(got))
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) || math.Float32bits(own[i]) != math.Float32bits(want[i]) {
				t.Fatalf("silu=%v: [%d]: ForwardInto %g, Forward's buffer %g, Forward %g", silu, i, got[i], own[i], want[i])
			}
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("silu=%v: Backward after ForwardInto did not panic", silu)
				}
			}()
			g.Backward(make([]float32, len(x)))
		}()
	}
}

// TestForwardIntoMatchesForward checks that Conv2d (1x1 direct, 3x3 'same', 3x3 stride 2),
// Concat and Upsample2x give Forward's bits when writing into a caller's buffer, and leave
// their own output buffers as Forward left them.
func TestForwardIntoMatchesForward(t *testing.T) {
	r := newRand(5)
	randF32 := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	same := func(what string, got, want, own []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) || math.Float32bits(own[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: [%d]: ForwardInto %g, own buffer %g, Forward %g", what, i, got[i], own[i], want[i])
			}
		}
	}
	const b, h, w = 3, 8, 8
	for _, tc := range []struct {
		k, stride int
		pad       [4]int
	}{{1, 1, [4]int{}}, {3, 1, [4]int{1, 1, 1, 1}}, {3, 2, [4]int{0, 0, 1, 1}}} {
		var a Arena[float32]
		var ws Workspace[float32]
		c := NewConv2d(&a, &ws, "c", 5, 6, tc.k, tc.stride, tc.pad)
		a.Alloc()
		copy(a.Data(), randF32(a.Len()))
		x := randF32(b * 5 * h * w)
		want := append([]float32(nil), c.Forward(x, b, h, w)...)
		own := c.Forward(x, b, h, w)
		got := c.ForwardInto(make([]float32, len(want)+3), x, b, h, w)
		same(fmt.Sprintf("conv k%d s%d", tc.k, tc.stride), got, want, own)
	}
	var cat Concat[float32]
	xa, xb := randF32(b*2*h*w), randF32(b*3*h*w)
	want := append([]float32(nil), cat.Forward(xa, xb, b, 2, 3, h*w)...)
	own := cat.Forward(xa, xb, b, 2, 3, h*w)
	same("concat", cat.ForwardInto(make([]float32, len(want)), xa, xb, b, 2, 3, h*w), want, own)
	var up Upsample2x[float32]
	want = append([]float32(nil), up.Forward(xa, b, 2, h, w)...)
	own = up.Forward(xa, b, 2, h, w)
	same("upsample", up.ForwardInto(make([]float32, len(want)), xa, b, 2, h, w), want, own)
}
