package nn

import (
	"fmt"
	"math"
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
	y, dx      []T
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
	cg := g.C / g.Groups
	gl := cg * p // elements per group
	parallelFor(b*g.Groups, len(x)*3, func(lo, hi int) {
		for bg := lo; bg < hi; bg++ {
			xs := x[bg*gl : (bg+1)*gl]
			var sum float64
			for _, v := range xs {
				sum += float64(v)
			}
			mean := sum / float64(gl)
			var sq float64
			for _, v := range xs {
				d := float64(v) - mean
				sq += d * d
			}
			rstd := 1 / math.Sqrt(sq/float64(gl)+g.Eps)
			g.mean[bg], g.rstd[bg] = mean, rstd
			c0 := (bg % g.Groups) * cg
			ys := g.y[bg*gl : (bg+1)*gl]
			for c := 0; c < cg; c++ {
				// z = x*scale + shift with scale = gamma*rstd, shift = beta - mean*scale.
				scale := float64(g.Gamma.W[c0+c]) * rstd
				shift := float64(g.Beta.W[c0+c]) - mean*scale
				sc, sh := T(scale), T(shift)
				xr, yr := xs[c*p:(c+1)*p], ys[c*p:(c+1)*p]
				if g.SiLU {
					for i, v := range xr {
						z := v*sc + sh
						yr[i] = z / (1 + T(math.Exp(float64(-z))))
					}
				} else {
					for i, v := range xr {
						yr[i] = v*sc + sh
					}
				}
			}
		}
	})
	return g.y
}

// Backward accumulates dGamma, dBeta from dy [b, C, p] and returns dx [b, C, p]:
// with gz = dL/dz, dxhat = gz*Gamma, dx = rstd*(dxhat - mean(dxhat) - xhat*mean(dxhat*xhat))
// (means over the group).
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
	cg := g.C / g.Groups
	gl := cg * p
	x := g.x
	parallelFor(b*g.Groups, len(dy)*6, func(lo, hi int) {
		for bg := lo; bg < hi; bg++ {
			mean, rstd := g.mean[bg], g.rstd[bg]
			s := bg / g.Groups
			c0 := (bg % g.Groups) * cg
			var sumD, sumDX float64 // sums of dxhat and dxhat*xhat over the group
			for c := 0; c < cg; c++ {
				gamma, beta := float64(g.Gamma.W[c0+c]), float64(g.Beta.W[c0+c])
				off := bg*gl + c*p
				xr, dyr, dxr := x[off:off+p], dy[off:off+p], g.dx[off:off+p]
				var sg, sgx float64
				for i, v := range xr {
					xh := (float64(v) - mean) * rstd
					gz := float64(dyr[i])
					if g.SiLU {
						z := gamma*xh + beta
						sig := 1 / (1 + math.Exp(-z))
						gz *= sig * (1 + z*(1-sig))
					}
					dxr[i] = T(gz) // held until the second pass
					sg += gz
					sgx += gz * xh
				}
				g.dbp[s*g.C+c0+c] = sg
				g.dgp[s*g.C+c0+c] = sgx
				sumD += sg * gamma
				sumDX += sgx * gamma
			}
			mD, mDX := sumD/float64(gl), sumDX/float64(gl)
			for c := 0; c < cg; c++ {
				gamma := float64(g.Gamma.W[c0+c])
				off := bg*gl + c*p
				xr, dxr := x[off:off+p], g.dx[off:off+p]
				for i, v := range xr {
					xh := (float64(v) - mean) * rstd
					dxr[i] = T(rstd * (float64(dxr[i])*gamma - mD - xh*mDX))
				}
			}
		}
	})
	for s := 0; s < b; s++ {
		for c := 0; c < g.C; c++ {
			g.Gamma.G[c] += T(g.dgp[s*g.C+c])
			g.Beta.G[c] += T(g.dbp[s*g.C+c])
		}
	}
	return g.dx
}
