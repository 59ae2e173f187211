package nn

import "fmt"

// Conv2d is a 2-D convolution (cross-correlation, as PyTorch's Conv2d) with a K x K kernel,
// stride S and explicit zero padding on each side.
//
// Weight is [Cout, Cin, K, K] and Bias is [Cout] (PyTorch layout). Forward maps x [B, Cin, H, W]
// to y [B, Cout, Ho, Wo] with Ho = (H + PadTop + PadBottom - K)/S + 1 (likewise Wo):
//
//	y[b,o,i,j] = Bias[o] + sum_{c,u,v} Weight[o,c,u,v] * x[b, c, i*S+u-PadTop, j*S+v-PadLeft]
//
// Stride-1 convolutions whose output has the input's size ("same") run as im2col + one GEMM
// per group of samples (one sample at 32x32, several at the low resolutions), the groups
// spread over the CPUs; other kernels larger than 1 run as im2col + one GEMM per sample, and
// 1x1 stride-1 kernels as one GEMM per sample on x directly, those GEMMs split over the CPUs.
type Conv2d[T Float] struct {
	Cin, Cout, K, Stride int
	// Pad is the zero padding (top, left, bottom, right). TensorFlow's 'SAME' padding for a 3x3
	// stride-2 convolution of an even size is (0, 0, 1, 1).
	Pad          [4]int
	Weight, Bias *Param[T]
	// NoInputGrad skips the input gradient in Backward (for the first layer of a network).
	NoInputGrad bool

	ws              *Workspace[T]
	x               []T
	b, h, w, ho, wo int
	y, dx           []T

	// The parallel loops' arguments and their bodies, bound once (see parallelFor).
	la, lb                                  []T
	shift                                   [2]int
	g                                       int // samples side by side in im2colShift
	fnIm2col, fnCol2im, fnShift, fnBiasGrad func(lo, hi int)
	fnFwdGroups, fnBwdHalves                func(chunk, lo, hi int)
	bs0, bg                                 int // backwardSame's current group: first sample, size
	bdys, bdyc                              []T // its dy as stored, and as [Cout, g*P]
	wp                                      []T // the weights (or flipped weights) packed by prepackA, or nil
}

// NewConv2d registers name.weight [cout, cin, k, k] and name.bias [cout] in a. It panics on
// non-positive sizes or a kernel that does not fit the padding.
func NewConv2d[T Float](a *Arena[T], ws *Workspace[T], name string, cin, cout, k, stride int, pad [4]int) *Conv2d[T] {
	if cin <= 0 || cout <= 0 || k <= 0 || stride <= 0 {
		panic(fmt.Sprintf("nn: NewConv2d %q: cin %d cout %d k %d stride %d", name, cin, cout, k, stride))
	}
	for _, p := range pad {
		if p < 0 || p >= k {
			panic(fmt.Sprintf("nn: NewConv2d %q: padding %v for kernel %d", name, pad, k))
		}
	}
	return &Conv2d[T]{
		Cin: cin, Cout: cout, K: k, Stride: stride, Pad: pad,
		Weight: a.NewParam(join(name, "weight"), cout, cin, k, k),
		Bias:   a.NewParam(join(name, "bias"), cout),
		ws:     ws,
	}
}

// OutSize returns (Ho, Wo) for an input of h x w; it panics if the output would be empty.
func (c *Conv2d[T]) OutSize(h, w int) (int, int) {
	ho := (h+c.Pad[0]+c.Pad[2]-c.K)/c.Stride + 1
	wo := (w+c.Pad[1]+c.Pad[3]-c.K)/c.Stride + 1
	if ho <= 0 || wo <= 0 {
		panic(fmt.Sprintf("nn: Conv2d %q: input %dx%d too small", c.Weight.Name, h, w))
	}
	return ho, wo
}

func (c *Conv2d[T]) direct() bool {
	return c.K == 1 && c.Stride == 1 && c.Pad == [4]int{}
}

// Forward computes y [b, Cout, Ho, Wo] from x [b, Cin, h, w]. It panics if len(x) != b*Cin*h*w.
func (c *Conv2d[T]) Forward(x []T, b, h, w int) []T {
	if len(x) != b*c.Cin*h*w {
		panic(fmt.Sprintf("nn: Conv2d %q: len(x) = %d, want %d*%d*%d*%d", c.Weight.Name, len(x), b, c.Cin, h, w))
	}
	ho, wo := c.OutSize(h, w)
	c.x, c.b, c.h, c.w, c.ho, c.wo = x, b, h, w, ho, wo
	p := ho * wo
	c.y = grow(c.y, b*c.Cout*p)
	if c.direct() {
		for s := 0; s < b; s++ {
			ys := c.y[s*c.Cout*p : (s+1)*c.Cout*p]
			addRowBias(ys, c.Bias.W, p)
			pgemm(false, false, c.Cout, p, c.Cin, 1, c.Weight.W, c.Cin, x[s*c.Cin*p:(s+1)*c.Cin*p], p, 1, ys, p)
		}
		return c.y
	}
	kk := c.Cin * c.K * c.K
	if c.same() {
		c.forwardSame(x)
		return c.y
	}
	// One sample at a time: its columns [Cin*K*K, P] stay in cache for the GEMM, which writes
	// y [Cout, P] of the sample in place (no [Cout, B*P] reshuffle).
	col := c.ws.slot(0, kk*p)
	in := c.Cin * h * w
	for s := 0; s < b; s++ {
		c.im2col(col, x[s*in:(s+1)*in])
		ys := c.y[s*c.Cout*p : (s+1)*c.Cout*p]
		addRowBias(ys, c.Bias.W, p)
		pgemm(false, false, c.Cout, p, kk, 1, c.Weight.W, kk, col, p, 1, ys, p)
	}
	return c.y
}

// ForwardInto is Forward writing y into out (len(out) >= b*Cout*Ho*Wo; it must not overlap x)
// instead of the layer's own buffer, and returns out[:b*Cout*Ho*Wo]. The values are Forward's
// bits; out is not kept (Backward never reads the output), so one out can serve many layers.
func (c *Conv2d[T]) ForwardInto(out, x []T, b, h, w int) []T {
	ho, wo := c.OutSize(h, w)
	n := b * c.Cout * ho * wo
	if len(out) < n {
		panic(fmt.Sprintf("nn: Conv2d %q: ForwardInto: len(out) = %d, want >= %d", c.Weight.Name, len(out), n))
	}
	own := c.y
	c.y = out[:n:n]
	y := c.Forward(x, b, h, w)
	c.y = own
	return y
}

// addRowBias sets y[o*p+i] = bias[o] for every row o of y (len(bias) rows of p elements).
func addRowBias[T Float](y, bias []T, p int) {
	for o, bo := range bias {
		row := y[o*p : (o+1)*p]
		row[0] = bo
		for n := 1; n < len(row); n *= 2 { // doubling copies run at memmove speed
			copy(row[n:], row[:n])
		}
	}
}

// Backward accumulates dWeight, dBias from dy [b, Cout, Ho, Wo] and returns dx [b, Cin, h, w]
// (nil when NoInputGrad). It panics if len(dy) does not match the last Forward.
func (c *Conv2d[T]) Backward(dy []T) []T {
	b, p := c.b, c.ho*c.wo
	if len(dy) != b*c.Cout*p {
		panic(fmt.Sprintf("nn: Conv2d %q: len(dy) = %d, want %d", c.Weight.Name, len(dy), b*c.Cout*p))
	}
	cout, cin := c.Cout, c.Cin
	if c.direct() {
		db := c.Bias.G
		for s := 0; s < b; s++ {
			dys := dy[s*cout*p : (s+1)*cout*p]
			for o := range db {
				var acc T
				for _, v := range dys[o*p : (o+1)*p] {
					acc += v
				}
				db[o] += acc
			}
			pgemm(false, true, cout, cin, p, 1, dys, p, c.x[s*cin*p:(s+1)*cin*p], p, 1, c.Weight.G, cin)
		}
		if c.NoInputGrad {
			return nil
		}
		c.dx = grow(c.dx, b*cin*p)
		for s := 0; s < b; s++ {
			pgemm(true, false, cin, p, cout, 1, c.Weight.W, cin, dy[s*cout*p:(s+1)*cout*p], p, 0, c.dx[s*cin*p:(s+1)*cin*p], p)
		}
		return c.dx
	}
	kk := cin * c.K * c.K
	c.la = dy
	if c.fnBiasGrad == nil {
		c.fnBiasGrad = c.biasGradRange
	}
	parallelFor(cout, len(dy), c.fnBiasGrad)
	c.la = nil
	if !c.NoInputGrad {
		c.dx = grow(c.dx, b*cin*c.h*c.w)
	}
	in := cin * c.h * c.w
	if c.same() {
		c.backwardSame(dy)
		if c.NoInputGrad {
			return nil
		}
		return c.dx
	}
	col := c.ws.slot(0, kk*p)
	for s := 0; s < b; s++ {
		dys := dy[s*cout*p : (s+1)*cout*p]
		c.im2col(col, c.x[s*in:(s+1)*in])
		pgemm(false, true, cout, kk, p, 1, dys, p, col, p, 1, c.Weight.G, kk)
		if c.NoInputGrad {
			continue
		}
		dcol := col // this sample's columns are no longer needed
		pgemm(true, false, kk, p, cout, 1, c.Weight.W, kk, dys, p, 0, dcol, p)
		c.col2im(c.dx[s*in:(s+1)*in], dcol)
	}
	if c.NoInputGrad {
		return nil
	}
	return c.dx
}

// biasGradRange adds to dBias[o], o in [lo, hi), the sum of c.la = dy over the batch and the
// positions of channel o.
func (c *Conv2d[T]) biasGradRange(lo, hi int) {
	dy, b, cout, p := c.la, c.b, c.Cout, c.ho*c.wo
	for o := lo; o < hi; o++ {
		var acc float64
		for s := 0; s < b; s++ {
			acc += sum64(dy[(s*cout+o)*p : (s*cout+o+1)*p])
		}
		c.Bias.G[o] += T(acc)
	}
}

// im2col fills col [Cin*K*K, Ho*Wo] for one sample x [Cin, H, W] with
// col[(c*K+u)*K+v, i*Wo + j] = x[c, i*S+u-PadTop, j*S+v-PadLeft] (zero outside the image).
func (c *Conv2d[T]) im2col(col, x []T) {
	if c.same() {
		c.im2colSame(col, x)
		return
	}
	c.la, c.lb = col, x
	if c.fnIm2col == nil {
		c.fnIm2col = c.im2colRange
	}
	parallelFor(c.Cin, len(col), c.fnIm2col)
	c.la, c.lb = nil, nil
}

// im2colRange is im2col for the channels [lo, hi) of c.la = col, c.lb = x.
func (c *Conv2d[T]) im2colRange(lo, hi int) {
	col, x := c.la, c.lb
	b, h, w, ho, wo, k, st := 1, c.h, c.w, c.ho, c.wo, c.K, c.Stride
	pt, pl := c.Pad[0], c.Pad[1]
	p := ho * wo
	n := b * p
	for ci := lo; ci < hi; ci++ {
		for u := 0; u < k; u++ {
			for v := 0; v < k; v++ {
				row := col[((ci*k+u)*k+v)*n : ((ci*k+u)*k+v+1)*n]
				jlo, jhi := validRange(v-pl, st, w, wo)
				for s := 0; s < b; s++ {
					img := x[(s*c.Cin+ci)*h*w : (s*c.Cin+ci+1)*h*w]
					for i := 0; i < ho; i++ {
						dst := row[s*p+i*wo : s*p+(i+1)*wo]
						iy := i*st + u - pt
						if iy < 0 || iy >= h {
							clear0(dst)
							continue
						}
						src := img[iy*w : (iy+1)*w]
						clear0(dst[:jlo])
						if st == 1 {
							copy(dst[jlo:jhi], src[jlo+v-pl:jhi+v-pl])
						} else {
							for j := jlo; j < jhi; j++ {
								dst[j] = src[j*st+v-pl]
							}
						}
						clear0(dst[jhi:])
					}
				}
			}
		}
	}
}

// col2im is the adjoint of im2col for one sample: dx[c, iy, ix] = sum of the dcol entries that
// im2col read from that position. dx [Cin, H, W] is overwritten.
func (c *Conv2d[T]) col2im(dx, dcol []T) {
	c.la, c.lb = dx, dcol
	if c.fnCol2im == nil {
		c.fnCol2im = c.col2imRange
	}
	parallelFor(c.Cin, len(dcol), c.fnCol2im)
	c.la, c.lb = nil, nil
}

// col2imRange is col2im for the channels [lo, hi) of c.la = dx, c.lb = dcol.
func (c *Conv2d[T]) col2imRange(lo, hi int) {
	dx, dcol := c.la, c.lb
	b, h, w, ho, wo, k, st := 1, c.h, c.w, c.ho, c.wo, c.K, c.Stride
	pt, pl := c.Pad[0], c.Pad[1]
	p := ho * wo
	n := b * p
	for ci := lo; ci < hi; ci++ {
		for s := 0; s < b; s++ {
			clear0(dx[(s*c.Cin+ci)*h*w : (s*c.Cin+ci+1)*h*w])
		}
		for u := 0; u < k; u++ {
			for v := 0; v < k; v++ {
				row := dcol[((ci*k+u)*k+v)*n : ((ci*k+u)*k+v+1)*n]
				jlo, jhi := validRange(v-pl, st, w, wo)
				for s := 0; s < b; s++ {
					img := dx[(s*c.Cin+ci)*h*w : (s*c.Cin+ci+1)*h*w]
					for i := 0; i < ho; i++ {
						iy := i*st + u - pt
						if iy < 0 || iy >= h {
							continue
						}
						src := row[s*p+i*wo : s*p+(i+1)*wo]
						dst := img[iy*w : (iy+1)*w]
						if st == 1 {
							d := dst[jlo+v-pl : jhi+v-pl]
							for j, g := range src[jlo:jhi] {
								d[j] += g
							}
						} else {
							for j := jlo; j < jhi; j++ {
								dst[j*st+v-pl] += src[j]
							}
						}
					}
				}
			}
		}
	}
}

// validRange returns the output columns [jlo, jhi) whose input column j*st+off lies in [0, w).
func validRange(off, st, w, wo int) (int, int) {
	jlo := 0
	if off < 0 {
		jlo = (-off + st - 1) / st
	}
	jhi := wo
	if last := (w - 1 - off); last < 0 {
		jhi = 0
	} else if m := last/st + 1; m < jhi {
		jhi = m
	}
	if jlo > jhi {
		jlo = jhi
	}
	return jlo, jhi
}

// same reports a stride-1 convolution whose output has the input's size: then row (c, u, v) of
// im2col is channel c shifted by (u-PadTop, v-PadLeft), one contiguous copy of the flattened
// image with the wrapped-around columns zeroed afterwards.
func (c *Conv2d[T]) same() bool {
	return c.Stride == 1 && c.ho == c.h && c.wo == c.w
}

// shiftRange returns, for shift (dy, dx) of an h x w image, the output rows [i0, i1) that read
// inside the image and the flat ranges dst [lo, hi) and src [lo+off, hi+off) (clipped to the
// image) of the contiguous copy; entries outside the clipped range lie in wrapped columns.
func shiftRange(h, w, dy, dx int) (i0, i1, lo, hi, off int) {
	i0, i1 = max(0, -dy), min(h, h-dy)
	if i1 <= i0 {
		return i0, i0, 0, 0, 0
	}
	off = dy*w + dx
	lo, hi = i0*w, i1*w
	lo = max(lo, -off)
	hi = min(hi, h*w-off)
	return i0, i1, lo, hi, off
}

// backwardSame is Backward's GEMM part for a same convolution, per group of g samples (as
// forwardSame): dW += dy col(x)^T, and dx as the transposed convolution, which for stride 1 and
// same size is the convolution of dy with the kernel flipped in both axes and Cin, Cout
// swapped, padded (K-1-PadTop, K-1-PadLeft): dx = Wflip col(dy). So dx is one well-shaped GEMM
// (k = Cout*K*K) instead of a GEMM with k = Cout and a col2im scatter-add. A group of more than
// one sample gathers its dy into [Cout, g*P] and spreads its dx [Cin, g*P] over the samples.
// The two halves of a group (im2col and GEMM for dW, the same for dx) run concurrently, each on
// one CPU; without an input gradient the dW half splits its im2col and GEMM instead.
func (c *Conv2d[T]) backwardSame(dy []T) {
	b, k := c.b, c.K
	cin, cout := c.Cin, c.Cout
	p, k2 := c.h*c.w, k*k
	nb := c.group()
	if !c.NoInputGrad {
		wf := c.ws.slot(1, cin*cout*k2) // [Cin, Cout*K*K]
		for co := 0; co < cout; co++ {
			for ci := 0; ci < cin; ci++ {
				src := c.Weight.W[(co*cin+ci)*k2 : (co*cin+ci+1)*k2]
				dst := wf[ci*cout*k2+co*k2 : ci*cout*k2+(co+1)*k2]
				for i, v := range src {
					dst[k2-1-i] = v // (u, v) -> (K-1-u, K-1-v)
				}
			}
		}
		c.wp = prepackA(c.ws.slots[4], false, cin, cout*k2, wf, cout*k2)
		if c.wp != nil {
			c.ws.slots[4] = c.wp
		}
		c.ws.reserveChunks()
		if c.fnBwdHalves == nil {
			c.fnBwdHalves = c.backwardHalves
		}
	}
	for s0 := 0; s0 < b; s0 += nb {
		g := min(nb, b-s0)
		n := g * p
		c.bs0, c.bg = s0, g
		c.bdys = dy[s0*cout*p : (s0+g)*cout*p]
		c.bdyc = c.bdys // dy of the group as [Cout, g*P]
		if g > 1 {
			c.bdyc = c.ws.slot(2, cout*n)
			gatherGroup(c.bdyc, dy, s0, g, cout, p)
		}
		if c.NoInputGrad {
			c.backwardWeight(0, true)
			continue
		}
		parallelForChunks(2, 2*n*cout*cin*k2, c.fnBwdHalves)
	}
	c.bdys, c.bdyc, c.wp = nil, nil, nil
}

// backwardHalves runs the halves [lo, hi) of the current group of backwardSame: 0 is dW, 1 is dx.
func (c *Conv2d[T]) backwardHalves(chunk, lo, hi int) {
	for h := lo; h < hi; h++ {
		if h == 0 {
			c.backwardWeight(chunk, false)
		} else {
			c.backwardInput(chunk)
		}
	}
}

// backwardWeight adds the current group's dy col(x)^T to dWeight, with chunk's scratch (with
// the parallel im2col and GEMM when par).
func (c *Conv2d[T]) backwardWeight(chunk int, par bool) {
	s0, g, cin, cout, p := c.bs0, c.bg, c.Cin, c.Cout, c.h*c.w
	kk, n := cin*c.K*c.K, g*p
	col := c.ws.chunkSlot(chunk, 0, kk*n)
	xs := c.x[s0*cin*p : (s0+g)*cin*p]
	if par {
		c.im2colShift(col, xs, cin, c.Pad[0], c.Pad[1], g)
		pgemm(false, true, cout, kk, n, 1, c.bdyc, n, col, n, 1, c.Weight.G, kk)
		return
	}
	shiftCols(col, xs, c.h, c.w, c.K, c.Pad[0], c.Pad[1], g, 0, cin)
	gemm(false, true, cout, kk, n, 1, c.bdyc, n, col, n, 1, c.Weight.G, kk)
}

// backwardInput writes the current group's dx = Wflip col(dy), with chunk's scratch.
func (c *Conv2d[T]) backwardInput(chunk int) {
	s0, g, cin, cout, p, k := c.bs0, c.bg, c.Cin, c.Cout, c.h*c.w, c.K
	kk, n := cout*k*k, g*p
	col := c.ws.chunkSlot(chunk, 0, kk*n)
	shiftCols(col, c.bdys, c.h, c.w, k, k-1-c.Pad[0], k-1-c.Pad[1], g, 0, cout)
	wf := c.ws.slots[1][:cin*kk]
	if g == 1 {
		gemmPacked(c.wp, false, cin, p, kk, wf, kk, col, p, 0, c.dx[s0*cin*p:(s0+1)*cin*p], p)
		return
	}
	dxg := c.ws.chunkSlot(chunk, 3, cin*n)
	gemmPacked(c.wp, false, cin, n, kk, wf, kk, col, n, 0, dxg, n)
	scatterGroup(c.dx, dxg, s0, g, cin, p)
}

func (c *Conv2d[T]) im2colSame(col, x []T) {
	c.im2colShift(col, x, c.Cin, c.Pad[0], c.Pad[1], 1)
}

// groupCols is the number of GEMM columns (samples x positions) a same convolution gathers
// into one GEMM: at the low resolutions one sample gives a narrow GEMM (16 columns at 4x4)
// whose packing of the weights costs as much as its multiply-adds.
const groupCols = 512

// group returns how many samples a same convolution of the last Forward multiplies at once:
// enough for groupCols columns, but at most half the batch (rounded up), so that a batch of two
// or more makes at least two groups for the workers to share. It does not depend on the
// number of CPUs, and neither do the results. The im2col matrix of a group is no larger than
// that of one sample at the full resolution of a 32x32 model.
func (c *Conv2d[T]) group() int {
	return max(1, min((c.b+1)/2, groupCols/(c.h*c.w)))
}

// forwardSame is Forward for a same convolution: per group of g samples, col = im2col of the
// group [Cin*K*K, g*P] and one GEMM W col; a group of one writes y [Cout, P] of its sample in
// place, a larger one goes through a [Cout, g*P] scratch that is then spread over the samples.
// Groups run concurrently, each on one CPU (a single group splits its im2col and GEMM instead).
func (c *Conv2d[T]) forwardSame(x []T) {
	nb := c.group()
	ng := (c.b + nb - 1) / nb
	if ng == 1 {
		c.forwardGroup(0, 0, c.b, x, true)
		return
	}
	c.ws.reserveChunks()
	if c.fnFwdGroups == nil {
		c.fnFwdGroups = c.forwardGroups
	}
	// The groups share one packing of the weights.
	kk := c.Cin * c.K * c.K
	c.wp = prepackA(c.ws.slots[4], false, c.Cout, kk, c.Weight.W, kk)
	if c.wp != nil {
		c.ws.slots[4] = c.wp
	}
	c.lb = x
	parallelForChunks(ng, len(x)*c.Cout*c.K*c.K, c.fnFwdGroups)
	c.lb, c.wp = nil, nil
}

// forwardGroups runs the groups [lo, hi) of forwardSame (input c.lb) with chunk's scratch.
func (c *Conv2d[T]) forwardGroups(chunk, lo, hi int) {
	nb := c.group()
	for gi := lo; gi < hi; gi++ {
		c.forwardGroup(chunk, gi*nb, min(nb, c.b-gi*nb), c.lb, false)
	}
}

// forwardGroup computes the output of samples [s0, s0+g) from x with chunk's scratch, with
// the parallel im2col and GEMM when par.
func (c *Conv2d[T]) forwardGroup(chunk, s0, g int, x []T, par bool) {
	p, cin, cout := c.ho*c.wo, c.Cin, c.Cout
	kk := cin * c.K * c.K
	n := g * p
	col := c.ws.chunkSlot(chunk, 0, kk*n)
	xs := x[s0*cin*p : (s0+g)*cin*p]
	if par {
		c.im2colShift(col, xs, cin, c.Pad[0], c.Pad[1], g)
	} else {
		shiftCols(col, xs, c.h, c.w, c.K, c.Pad[0], c.Pad[1], g, 0, cin)
	}
	mul := func(n int, beta T, y []T) { // y = W col + beta y, col [kk, n]
		if par {
			pgemm(false, false, cout, n, kk, 1, c.Weight.W, kk, col, n, beta, y, n)
		} else {
			gemmPacked(c.wp, false, cout, n, kk, c.Weight.W, kk, col, n, beta, y, n)
		}
	}
	if g == 1 {
		ys := c.y[s0*cout*p : (s0+1)*cout*p]
		addRowBias(ys, c.Bias.W, p)
		mul(p, 1, ys)
		return
	}
	yg := c.ws.chunkSlot(chunk, 2, cout*n)
	mul(n, 0, yg)
	for s := 0; s < g; s++ {
		for o, bo := range c.Bias.W {
			dst := c.y[((s0+s)*cout+o)*p : ((s0+s)*cout+o+1)*p]
			for i, v := range yg[o*n+s*p : o*n+(s+1)*p] {
				dst[i] = v + bo
			}
		}
	}
}

// gatherGroup copies samples [s0, s0+g) of t [B, ch, p] into dst [ch, g*p]:
// dst[c*g*p + s*p + i] = t[s0+s, c, i].
func gatherGroup[T Float](dst, t []T, s0, g, ch, p int) {
	n := g * p
	for s := 0; s < g; s++ {
		for ci := 0; ci < ch; ci++ {
			copy(dst[ci*n+s*p:ci*n+(s+1)*p], t[((s0+s)*ch+ci)*p:((s0+s)*ch+ci+1)*p])
		}
	}
}

// scatterGroup is the inverse of gatherGroup: t[s0+s, c, i] = src[c*g*p + s*p + i].
func scatterGroup[T Float](t, src []T, s0, g, ch, p int) {
	n := g * p
	for s := 0; s < g; s++ {
		for ci := 0; ci < ch; ci++ {
			copy(t[((s0+s)*ch+ci)*p:((s0+s)*ch+ci+1)*p], src[ci*n+s*p:ci*n+(s+1)*p])
		}
	}
}

// im2colShift is im2col of g samples x [g, cin, h, w] (h, w of the last Forward) for this
// layer's stride-1 K x K kernel with top and left padding pt, pl and an output of the input's
// size, side by side: col [cin*K*K, g*h*w] with
// col[(c*K+u)*K+v, s*h*w + i*w+j] = x[s, c, i+u-pt, j+v-pl].
func (c *Conv2d[T]) im2colShift(col, x []T, cin, pt, pl, g int) {
	c.la, c.lb, c.shift, c.g = col, x, [2]int{pt, pl}, g
	if c.fnShift == nil {
		c.fnShift = c.im2colShiftRange
	}
	parallelFor(cin, c.K*c.K*cin*c.h*c.w*g, c.fnShift)
	c.la, c.lb = nil, nil
}

// im2colShiftRange is im2colShift for the channels [lo, hi).
func (c *Conv2d[T]) im2colShiftRange(lo, hi int) {
	shiftCols(c.la, c.lb, c.h, c.w, c.K, c.shift[0], c.shift[1], c.g, lo, hi)
}

// shiftCols writes the rows of channels [lo, hi) of the side-by-side im2col of g samples
// x [g, cin, h, w] for a stride-1 k x k kernel with top and left padding pt, pl (see
// im2colShift) into col [cin*k*k, g*h*w].
func shiftCols[T Float](col, x []T, h, w, k, pt, pl, g, lo, hi int) {
	hw := h * w
	cin := len(x) / (g * hw)
	n := g * hw
	for ci := lo; ci < hi; ci++ {
		for u := 0; u < k; u++ {
			for v := 0; v < k; v++ {
				dx := v - pl
				i0, i1, f0, f1, off := shiftRange(h, w, u-pt, dx)
				r := ((ci*k+u)*k + v) * n
				for s := 0; s < g; s++ {
					img := x[(s*cin+ci)*hw : (s*cin+ci+1)*hw]
					row := col[r+s*hw : r+(s+1)*hw]
					clear(row[:i0*w])
					clear(row[i1*w:])
					copy(row[f0:f1], img[f0+off:f1+off])
					zeroWrapped(row, i0, i1, w, dx)
				}
			}
		}
	}
}

// zeroWrapped zeroes, in rows [i0, i1) of the w-wide image m, the columns a horizontal shift
// by dx took from the neighbouring row: j < -dx, or j >= w-dx.
func zeroWrapped[T Float](m []T, i0, i1, w, dx int) {
	switch {
	case dx < 0:
		for i := i0; i < i1; i++ {
			for j := i * w; j < i*w-dx; j++ {
				m[j] = 0
			}
		}
	case dx > 0:
		for i := i0; i < i1; i++ {
			for j := (i+1)*w - dx; j < (i+1)*w; j++ {
				m[j] = 0
			}
		}
	}
}
