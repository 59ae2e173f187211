package nn

import (
	"fmt"

	"ddpm/internal/rng"
)

// Upsample2x is nearest-neighbour 2x upsampling: y[b,c,i,j] = x[b,c,i/2,j/2] for x [B, C, H, W]
// and y [B, C, 2H, 2W].
type Upsample2x[T Float] struct {
	b, c, h, w int
	y, dx      []T

	la           []T              // the parallel loops' argument
	fnFwd, fnBwd func(lo, hi int) // their bodies, bound once (see parallelFor)
}

// Forward returns y [b, c, 2h, 2w].
func (u *Upsample2x[T]) Forward(x []T, b, c, h, w int) []T {
	if len(x) != b*c*h*w {
		panic(fmt.Sprintf("nn: Upsample2x: len(x) = %d, want %d*%d*%d*%d", len(x), b, c, h, w))
	}
	u.b, u.c, u.h, u.w = b, c, h, w
	u.y = grow(u.y, 4*len(x))
	u.la = x
	u.bind()
	parallelFor(b*c*h, 4*len(x), u.fnFwd)
	u.la = nil
	return u.y
}

// ForwardInto is Forward writing y into out (len(out) >= 4*len(x); it must not overlap x)
// instead of the layer's own buffer, and returns out[:4*len(x)]; out is not kept.
func (u *Upsample2x[T]) ForwardInto(out, x []T, b, c, h, w int) []T {
	n := 4 * len(x)
	if len(out) < n {
		panic(fmt.Sprintf("nn: Upsample2x: ForwardInto: len(out) = %d, want >= %d", len(out), n))
	}
	own := u.y
	u.y = out[:n:n]
	y := u.Forward(x, b, c, h, w)
	u.y = own
	return y
}

func (u *Upsample2x[T]) bind() {
	if u.fnFwd == nil {
		u.fnFwd, u.fnBwd = u.forwardRange, u.backwardRange
	}
}

// forwardRange upsamples the input rows [lo, hi) (over (b, c, i)) of u.la = x.
func (u *Upsample2x[T]) forwardRange(lo, hi int) {
	x, w, w2 := u.la, u.w, 2*u.w
	for r := lo; r < hi; r++ {
		src := x[r*w : (r+1)*w]
		d0 := u.y[2*r*w2 : (2*r+1)*w2]
		for j, v := range src {
			d0[2*j], d0[2*j+1] = v, v
		}
		copy(u.y[(2*r+1)*w2:(2*r+2)*w2], d0)
	}
}

// backwardRange sums the four gradients of each element of the input rows [lo, hi) from u.la = dy.
func (u *Upsample2x[T]) backwardRange(lo, hi int) {
	dy, w, w2 := u.la, u.w, 2*u.w
	for r := lo; r < hi; r++ {
		a, b := dy[2*r*w2:(2*r+1)*w2], dy[(2*r+1)*w2:(2*r+2)*w2]
		d := u.dx[r*w : (r+1)*w]
		for j := range d {
			d[j] = a[2*j] + a[2*j+1] + b[2*j] + b[2*j+1]
		}
	}
}

// Backward returns dx [b, c, h, w], each element the sum of its four copies' gradients.
func (u *Upsample2x[T]) Backward(dy []T) []T {
	n := u.b * u.c * u.h * u.w
	if len(dy) != 4*n {
		panic(fmt.Sprintf("nn: Upsample2x: len(dy) = %d, want %d", len(dy), 4*n))
	}
	u.dx = grow(u.dx, n)
	u.la = dy
	u.bind()
	parallelFor(u.b*u.c*u.h, 4*n, u.fnBwd)
	u.la = nil
	return u.dx
}

// Concat joins a [B, Ca, P] and b [B, Cb, P] along channels into y [B, Ca+Cb, P] (torch.cat(dim=1)).
type Concat[T Float] struct {
	b, ca, cb, p int
	y, da, db    []T
}

// Forward returns y [bs, ca+cb, p].
func (l *Concat[T]) Forward(a, b []T, bs, ca, cb, p int) []T {
	if len(a) != bs*ca*p || len(b) != bs*cb*p {
		panic(fmt.Sprintf("nn: Concat: lengths %d, %d, want %d*%d*%d and %d*%d*%d", len(a), len(b), bs, ca, p, bs, cb, p))
	}
	l.b, l.ca, l.cb, l.p = bs, ca, cb, p
	l.y = grow(l.y, len(a)+len(b))
	na, nb := ca*p, cb*p
	for s := 0; s < bs; s++ {
		copy(l.y[s*(na+nb):], a[s*na:(s+1)*na])
		copy(l.y[s*(na+nb)+na:], b[s*nb:(s+1)*nb])
	}
	return l.y
}

// ForwardInto is Forward writing y into out (len(out) >= bs*(ca+cb)*p; it must overlap neither
// input) instead of the layer's own buffer, and returns out[:bs*(ca+cb)*p]; out is not kept.
func (l *Concat[T]) ForwardInto(out, a, b []T, bs, ca, cb, p int) []T {
	n := len(a) + len(b)
	if len(out) < n {
		panic(fmt.Sprintf("nn: Concat: ForwardInto: len(out) = %d, want >= %d", len(out), n))
	}
	own := l.y
	l.y = out[:n:n]
	y := l.Forward(a, b, bs, ca, cb, p)
	l.y = own
	return y
}

// Backward splits dy [B, Ca+Cb, P] into da [B, Ca, P] and db [B, Cb, P].
func (l *Concat[T]) Backward(dy []T) (da, db []T) {
	na, nb := l.ca*l.p, l.cb*l.p
	if len(dy) != l.b*(na+nb) {
		panic(fmt.Sprintf("nn: Concat: len(dy) = %d, want %d", len(dy), l.b*(na+nb)))
	}
	l.da, l.db = grow(l.da, l.b*na), grow(l.db, l.b*nb)
	for s := 0; s < l.b; s++ {
		copy(l.da[s*na:(s+1)*na], dy[s*(na+nb):])
		copy(l.db[s*nb:(s+1)*nb], dy[s*(na+nb)+na:])
	}
	return l.da, l.db
}

// Dropout zeroes each element with probability P and scales the rest by 1/(1-P) (inverted
// dropout, as PyTorch and TensorFlow). The mask is a pure function of (seed, the sample's global
// position, Layer): sample s draws from rng.New(seed, rng.Stream(positions[s],
// rng.PurposeDropout<<32|Layer)), one Uint32 u per element in order, and drops the element iff
// u < floor(P * 2^32). So a sample's mask does not depend on the batch it travels in or on the
// rank that computes it (DESIGN.md section 3).
type Dropout[T Float] struct {
	P     float64
	Layer uint64
	// InPlace makes Forward overwrite x and Backward overwrite dy (and return them) instead of
	// writing buffers of the layer's own: for a caller that needs neither afterwards, it saves
	// two activation-sized buffers. Forward still keeps no reference to x.
	InPlace bool

	active bool
	keep   []uint8 // 1 where the element is kept (scaled by 1/(1-P)), 0 where dropped
	scale  T       // 1/(1-P)
	y, dx  []T

	x         []T // Forward's arguments, for forwardRange
	seed      uint64
	positions []uint64
	fnFwd     func(lo, hi int) // the parallel loop body, bound once (see parallelFor)
}

// Forward applies dropout to x [len(positions), D] in training mode (positions != nil) and
// returns x itself in evaluation mode (positions == nil) or when P == 0.
func (d *Dropout[T]) Forward(x []T, seed uint64, positions []uint64) []T {
	d.active = positions != nil && d.P > 0
	if !d.active {
		return x
	}
	if !(d.P < 1) {
		panic(fmt.Sprintf("nn: Dropout: P = %g", d.P))
	}
	b := len(positions)
	if len(x)%b != 0 {
		panic(fmt.Sprintf("nn: Dropout: len(x) = %d not a multiple of batch %d", len(x), b))
	}
	if cap(d.keep) < len(x) {
		d.keep = make([]uint8, len(x))
	}
	d.keep = d.keep[:len(x)]
	d.scale = T(1 / (1 - d.P))
	if d.InPlace {
		d.y = x
	} else {
		d.y = grow(d.y, len(x))
	}
	d.x, d.seed, d.positions = x, seed, positions
	if d.fnFwd == nil {
		d.fnFwd = d.forwardRange
	}
	parallelFor(b, len(x)*4, d.fnFwd)
	y := d.y
	d.x, d.positions = nil, nil
	if d.InPlace {
		d.y = nil
	}
	return y
}

// forwardRange draws the masks of the samples [lo, hi) and applies them to d.x.
func (d *Dropout[T]) forwardRange(lo, hi int) {
	per := len(d.x) / len(d.positions)
	thr := uint32(d.P * (1 << 32))
	var src rng.Source
	for s := lo; s < hi; s++ {
		src.Reset(d.seed, rng.Stream(d.positions[s], rng.PurposeDropout<<32|d.Layer))
		m, xs, ys := d.keep[s*per:(s+1)*per], d.x[s*per:(s+1)*per], d.y[s*per:(s+1)*per]
		for i := range m {
			if src.Uint32() < thr {
				m[i] = 0
				ys[i] = 0
			} else {
				m[i] = 1
				ys[i] = xs[i] * d.scale
			}
		}
	}
}

// Backward returns dx = dy .* mask, the mask being 0 or 1/(1-P) (dy itself when the last
// Forward was inactive; dy overwritten with dx when InPlace).
func (d *Dropout[T]) Backward(dy []T) []T {
	if !d.active {
		return dy
	}
	if len(dy) != len(d.keep) {
		panic(fmt.Sprintf("nn: Dropout: len(dy) = %d, want %d", len(dy), len(d.keep)))
	}
	dx := dy
	if !d.InPlace {
		d.dx = grow(d.dx, len(dy))
		dx = d.dx
	}
	for i, k := range d.keep {
		if k != 0 {
			dx[i] = dy[i] * d.scale
		} else {
			dx[i] = 0
		}
	}
	return dx
}
