package unet

import (
	"math"

	"ddpm/internal/rng"
	"ddpm/nn"
)

// initSpec says how Init fills one weight tensor: TensorFlow's variance_scaling(scale,
// 'fan_avg', 'uniform'), i.e. U(-a, a) with a = sqrt(3*scale / ((fanIn+fanOut)/2)), as the
// original's default_init; or all ones (GroupNorm gamma).
type initSpec[T nn.Float] struct {
	p             *nn.Param[T]
	scale         float64
	fanIn, fanOut int
	ones          bool
}

// zeroScale is the original's init_scale=0 (default_init maps 0 to 1e-10): the second conv of
// each ResBlock, the attention output projection and conv_out start almost at zero, so every
// block starts as the identity and eps_theta starts near 0.
const zeroScale = 1e-10

func (n *Net[T]) initConv(c *nn.Conv2d[T], scale float64) {
	if scale == 0 {
		scale = zeroScale
	}
	kk := c.K * c.K
	n.inits = append(n.inits, initSpec[T]{p: c.Weight, scale: scale, fanIn: c.Cin * kk, fanOut: c.Cout * kk})
}

func (n *Net[T]) initLinear(l *nn.Linear[T]) {
	n.inits = append(n.inits, initSpec[T]{p: l.Weight, scale: 1, fanIn: l.In, fanOut: l.Out})
}

func (n *Net[T]) initNorm(g *nn.GroupNorm[T]) {
	n.inits = append(n.inits, initSpec[T]{p: g.Gamma, ones: true})
}

// Init sets every parameter as the original does: fan-average uniform variance scaling for
// conv and dense weights (scale 1, or 1e-10 for the layers the original zero-initializes),
// zero biases, GroupNorm gamma 1 and beta 0. It is a pure function of seed: the tensor with
// arena index i draws from rng.New(seed, rng.Stream(i, rng.PurposeInit)), uniformly
// a*(2u-1) with u = Float64(), in element order. Gradients are zeroed; those of a model that
// has not run Backward nor handed out Grads are zero already and are not written, so a model
// used only for forward passes never makes its gradient arena resident.
func (n *Net[T]) Init(seed uint64) {
	clear(n.arena.Data())
	if n.gradsUsed {
		clear(n.arena.Grad())
	}
	index := map[*nn.Param[T]]int{}
	for i, p := range n.arena.Params() {
		index[p] = i
	}
	var src rng.Source
	for _, s := range n.inits {
		if s.ones {
			for i := range s.p.W {
				s.p.W[i] = 1
			}
			continue
		}
		src.Reset(seed, rng.Stream(uint64(index[s.p]), rng.PurposeInit))
		limit := math.Sqrt(3 * s.scale / (float64(s.fanIn+s.fanOut) / 2))
		for i := range s.p.W {
			s.p.W[i] = T(limit * (2*src.Float64() - 1))
		}
	}
}
