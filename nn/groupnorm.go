package nn

import (
	"fmt"
	"math"
	"unsafe"
)

// GroupNorm normalizes each group of C/Groups channels of each sample over the group's channels
// and spatial positions (Wu & He 2018; PyTorch nn.GroupNorm, biased variance), then applies the
// per-channel affine Gamma [C], Beta [C]; with SiLU set it also applies SiLU(z) = z*sigmoid(z)
// (the fused "normalize, then activate" of every ResBlock and of the output head):
//
//	xhat = (x - mean_g) / sqrt(var_g + Eps);  z = Gamma[c]*xhat + Beta[c];  y = SiLU ? z*sigmoid(z) : z
//
// Statistics are accumulated in float64. Samples x groups run in parallel.
type GroupNorm[T Float] struct {
	C, Groups   int
	Eps         float64
	SiLU        bool
	Gamma, Beta *Param[T]

	x          []T
	b, p       int
	mean, rstd []float64 // [B*Groups]
	dgp, dbp   []float64 // per-(sample, channel) partial gradients of Gamma and Beta
	// dx is the input gradient of Backward; with SiLU, Forward leaves sigmoid(z) there, which
	// Backward reads back (element by element, before overwriting it) instead of recomputing exp.
	y, dx []T

	noGrad       bool             // ForwardInto: the sigmoids go into y (overwritten), not dx
	dy           []T              // Backward's argument, for backwardRange
	fnFwd, fnBwd func(lo, hi int) // the parallel loop bodies, bound once (see parallelFor)
}

// NewGroupNorm registers name.weight [c] (Gamma, initialized to 1 by the caller) and name.bias [c]
// (Beta) in a. It panics unless groups divides c.
func NewGroupNorm[T Float](a *Arena[T], name string, c, groups int, eps float64, silu bool) *GroupNorm[T] {
	if c <= 0 || groups <= 0 || c%groups != 0 || !(eps > 0) {
		panic(fmt.Sprintf("nn: NewGroupNorm %q: c %d groups %d eps %g", name, c, groups, eps))
	}
	return &GroupNorm[T]{C: c, Groups: groups, Eps: eps, SiLU: silu,
		Gamma: a.NewParam(join(name, "weight"), c),
		Beta:  a.NewParam(join(name, "bias"), c)}
}

// Forward normalizes x [b, C, p] (p = H*W) and returns y of the same shape.
func (g *GroupNorm[T]) Forward(x []T, b, p int) []T {
	if len(x) != b*g.C*p {
		panic(fmt.Sprintf("nn: GroupNorm %q: len(x) = %d, want %d*%d*%d", g.Gamma.Name, len(x), b, g.C, p))
	}
	g.x, g.b, g.p = x, b, p
	g.y = grow(g.y, len(x))
	if cap(g.mean) < b*g.Groups {
		g.mean = make([]float64, b*g.Groups)
		g.rstd = make([]float64, b*g.Groups)
	}
	if g.SiLU {
		g.dx = grow(g.dx, len(x))
	}
	if g.fnFwd == nil {
		g.fnFwd, g.fnBwd = g.forwardRange, g.backwardRange
	}
	parallelFor(b*g.Groups, len(x)*3, g.fnFwd)
	return g.y
}

// ForwardInto is Forward for inference: it writes y [b, C, p] into out (len(out) >= b*C*p; it
// must not overlap x) and returns out[:b*C*p], keeping nothing for Backward (no sigmoid buffer,
// no reference to x or out), so one out can serve many layers whose outputs are consumed at
// once. The values are bit-identical to Forward's. A Backward after it panics.
func (g *GroupNorm[T]) ForwardInto(out, x []T, b, p int) []T {
	n := b * g.C * p
	if len(x) != n || len(out) < n {
		panic(fmt.Sprintf("nn: GroupNorm %q: ForwardInto: len(x) = %d, len(out) = %d, want %d*%d*%d", g.Gamma.Name, len(x), len(out), b, g.C, p))
	}
	own := g.y
	g.x, g.b, g.p, g.y, g.noGrad = x, b, p, out[:n], true
	if cap(g.mean) < b*g.Groups {
		g.mean = make([]float64, b*g.Groups)
		g.rstd = make([]float64, b*g.Groups)
	}
	if g.fnFwd == nil {
		g.fnFwd, g.fnBwd = g.forwardRange, g.backwardRange
	}
	parallelFor(b*g.Groups, n*3, g.fnFwd)
	g.x, g.b, g.p, g.y, g.noGrad = nil, 0, 0, own, false
	return out[:n]
}

// Backward accumulates dGamma, dBeta from dy [b, C, p] and returns dx [b, C, p]:
// with gz = dL/dz, dxhat = gz*Gamma, dx = rstd*(dxhat - mean(dxhat) - xhat*mean(dxhat*xhat))
// (means over the group). Each Backward must follow its own Forward (with SiLU it consumes the
// sigmoids Forward left in the dx buffer).
func (g *GroupNorm[T]) Backward(dy []T) []T {
	b, p := g.b, g.p
	if len(dy) != b*g.C*p {
		panic(fmt.Sprintf("nn: GroupNorm %q: len(dy) = %d, want %d", g.Gamma.Name, len(dy), b*g.C*p))
	}
	g.dx = grow(g.dx, len(dy))
	if cap(g.dgp) < b*g.C {
		g.dgp = make([]float64, b*g.C)
		g.dbp = make([]float64, b*g.C)
	}
	g.dy = dy
	parallelFor(b*g.Groups, len(dy)*6, g.fnBwd)
	g.dy = nil
	for s := 0; s < b; s++ {
		for c := 0; c < g.C; c++ {
			g.Gamma.G[c] += T(g.dgp[s*g.C+c])
			g.Beta.G[c] += T(g.dbp[s*g.C+c])
		}
	}
	return g.dx
}

// forwardRange normalizes the (sample, group) pairs [lo, hi) of g.x.
func (g *GroupNorm[T]) forwardRange(lo, hi int) {
	x, p := g.x, g.p
	cg := g.C / g.Groups
	gl := cg * p // elements per group
	for bg := lo; bg < hi; bg++ {
		xs := x[bg*gl : (bg+1)*gl]
		mean := sum64(xs) / float64(gl)
		rstd := 1 / math.Sqrt(sqDev64(xs, mean)/float64(gl)+g.Eps)
		g.mean[bg], g.rstd[bg] = mean, rstd
		c0 := (bg % g.Groups) * cg
		ys := g.y[bg*gl : (bg+1)*gl]
		for c := 0; c < cg; c++ {
			// z = x*scale + shift with scale = gamma*rstd, shift = beta - mean*scale.
			scale := float64(g.Gamma.W[c0+c]) * rstd
			shift := float64(g.Beta.W[c0+c]) - mean*scale
			sc, sh := T(scale), T(shift)
			xr, yr := xs[c*p:(c+1)*p], ys[c*p:(c+1)*p]
			yr = yr[:len(xr)]
			if g.SiLU {
				// Inference keeps no sigmoids: they go into y, where SiLU16 and the
				// scalar loop store each one before the product that replaces it.
				sr := yr
				if !g.noGrad {
					sr = g.dx[bg*gl+c*p : bg*gl+(c+1)*p]
				}
				if unsafe.Sizeof(sc) == 4 {
					siluRow32(as[float32](yr), as[float32](sr), as[float32](xr), float32(sc), float32(sh))
					continue
				}
				sr = sr[:len(xr)]
				for i, v := range xr {
					z := v*sc + sh
					sg := 1 / (1 + expT(-z))
					sr[i] = sg
					yr[i] = z * sg
				}
			} else {
				for i, v := range xr {
					yr[i] = v*sc + sh
				}
			}
		}
	}
}

// backwardRange computes dx and the partial dGamma, dBeta of the (sample, group) pairs [lo, hi).
func (g *GroupNorm[T]) backwardRange(lo, hi int) {
	x, dy, p := g.x, g.dy, g.p
	cg := g.C / g.Groups
	gl := cg * p
	for bg := lo; bg < hi; bg++ {
		mean, rstd := g.mean[bg], g.rstd[bg]
		s := bg / g.Groups
		c0 := (bg % g.Groups) * cg
		var sumD, sumDX float64 // sums of dxhat and dxhat*xhat over the group
		for c := 0; c < cg; c++ {
			gamma, beta := float64(g.Gamma.W[c0+c]), float64(g.Beta.W[c0+c])
			off := bg*gl + c*p
			xr, dyr, dxr := x[off:off+p], dy[off:off+p], g.dx[off:off+p]
			var sg, sgx float64 // sums of gz and gz*x; sum gz*xhat = rstd*(sgx - mean*sg)
			if g.SiLU {
				// gz = dy * SiLU'(z) with z = x*sc + sh, as in Forward.
				scale := gamma * rstd
				sc, sh := T(scale), T(beta-mean*scale)
				sg, sgx = siluGradSums(dxr, dyr, xr, dxr, sc, sh) // dxr holds sigmoid(z)
			} else {
				sg, sgx = sum64(dyr), dot64(dyr, xr)
			}
			sxh := rstd * (sgx - mean*sg)
			g.dbp[s*g.C+c0+c] = sg
			g.dgp[s*g.C+c0+c] = sxh
			sumD += sg * gamma
			sumDX += sxh * gamma
		}
		mD, mDX := sumD/float64(gl), sumDX/float64(gl)
		// dx = rstd*(gz*gamma - mD - xhat*mDX) = gz*(rstd*gamma) + x*bx + c, with
		// bx = -rstd^2 mDX and c = rstd*(mean*rstd*mDX - mD).
		bx := T(-rstd * rstd * mDX)
		cc := T(rstd * (mean*rstd*mDX - mD))
		for c := 0; c < cg; c++ {
			a := T(rstd * float64(g.Gamma.W[c0+c]))
			off := bg*gl + c*p
			xr, dxr := x[off:off+p], g.dx[off:off+p]
			gz := dxr // gz was written there, or is dy itself without SiLU
			if !g.SiLU {
				gz = dy[off : off+p]
			}
			dxr, gz = dxr[:len(xr)], gz[:len(xr)]
			for i, v := range xr {
				dxr[i] = gz[i]*a + v*bx + cc
			}
		}
	}
}

// siluGradSums writes gz[i] = dy[i] * SiLU'(z) with z = x[i]*sc + sh, sig[i] = sigmoid(z) and
// SiLU'(z) = sigmoid(z)*(1 + z*(1 - sigmoid(z))), and returns the float64 sums of gz and gz*x.
// gz may alias sig: element i of sig is read before gz[i] is written.
func siluGradSums[T Float](gz, dy, x, sig []T, sc, sh T) (sg, sgx float64) {
	gz, dy, sig = gz[:len(x)], dy[:len(x)], sig[:len(x)]
	var s0, s1, t0, t1 float64
	i := 0
	for ; i+1 < len(x); i += 2 {
		z0, z1 := x[i]*sc+sh, x[i+1]*sc+sh
		g0, g1 := sig[i], sig[i+1]
		d0 := dy[i] * g0 * (1 + z0*(1-g0))
		d1 := dy[i+1] * g1 * (1 + z1*(1-g1))
		gz[i], gz[i+1] = d0, d1
		s0 += float64(d0)
		s1 += float64(d1)
		t0 += float64(d0) * float64(x[i])
		t1 += float64(d1) * float64(x[i+1])
	}
	for ; i < len(x); i++ {
		z, g := x[i]*sc+sh, sig[i]
		d := dy[i] * g * (1 + z*(1-g))
		gz[i] = d
		s0 += float64(d)
		t0 += float64(d) * float64(x[i])
	}
	return s0 + s1, t0 + t1
}

// sum64 is the float64 sum of s, with four accumulators to hide the add latency.
func sum64[T Float](s []T) float64 {
	var a0, a1, a2, a3 float64
	i := 0
	for ; i+3 < len(s); i += 4 {
		a0 += float64(s[i])
		a1 += float64(s[i+1])
		a2 += float64(s[i+2])
		a3 += float64(s[i+3])
	}
	for ; i < len(s); i++ {
		a0 += float64(s[i])
	}
	return (a0 + a1) + (a2 + a3)
}

// sqDev64 is the float64 sum of (s[i] - mean)^2.
func sqDev64[T Float](s []T, mean float64) float64 {
	var a0, a1, a2, a3 float64
	i := 0
	for ; i+3 < len(s); i += 4 {
		d0, d1, d2, d3 := float64(s[i])-mean, float64(s[i+1])-mean, float64(s[i+2])-mean, float64(s[i+3])-mean
		a0 += d0 * d0
		a1 += d1 * d1
		a2 += d2 * d2
		a3 += d3 * d3
	}
	for ; i < len(s); i++ {
		d := float64(s[i]) - mean
		a0 += d * d
	}
	return (a0 + a1) + (a2 + a3)
}

// dot64 is the float64 dot product of a and b (len(b) >= len(a)).
func dot64[T Float](a, b []T) float64 {
	b = b[:len(a)]
	var a0, a1, a2, a3 float64
	i := 0
	for ; i+3 < len(a); i += 4 {
		a0 += float64(a[i]) * float64(b[i])
		a1 += float64(a[i+1]) * float64(b[i+1])
		a2 += float64(a[i+2]) * float64(b[i+2])
		a3 += float64(a[i+3]) * float64(b[i+3])
	}
	for ; i < len(a); i++ {
		a0 += float64(a[i]) * float64(b[i])
	}
	return (a0 + a1) + (a2 + a3)
}
