package unet

import "ddpm/nn"

// resBlock is the original's resnet_block (PyTorch ResBlock in unet_bench.py):
//
//	h = conv1(SiLU(norm1(x))) + temb_proj(SiLU(temb))[:, :, None, None]
//	h = conv2(dropout(SiLU(norm2(h))))
//	y = skip(x) + h        (skip = 1x1 conv when cin != cout, else identity)
//
// With cat set, x is the channel concatenation of the incoming h and a skip tensor.
type resBlock[T nn.Float] struct {
	cin, cout int
	cat       *nn.Concat[T]
	norm1     *nn.GroupNorm[T]
	conv1     *nn.Conv2d[T]
	tproj     *nn.Linear[T]
	norm2     *nn.GroupNorm[T]
	drop      nn.Dropout[T]
	conv2     *nn.Conv2d[T]
	skip      *nn.Conv2d[T]

	b, p int
	x    []T
	dtp  []T // [B, cout]: gradient of the projected time embedding
}

func newResBlock[T nn.Float](a *nn.Arena[T], ws *nn.Workspace[T], name string, cin, cout, tdim int, cfg Config, layer uint64) *resBlock[T] {
	r := &resBlock[T]{cin: cin, cout: cout}
	same := [4]int{1, 1, 1, 1}
	r.norm1 = nn.NewGroupNorm(a, name+".norm1", cin, cfg.Groups, cfg.GNEps, true)
	r.conv1 = nn.NewConv2d(a, ws, name+".conv1", cin, cout, 3, 1, same)
	r.tproj = nn.NewLinear(a, name+".temb_proj", tdim, cout)
	r.norm2 = nn.NewGroupNorm(a, name+".norm2", cout, cfg.Groups, cfg.GNEps, true)
	// In place: norm2's output is conv2's input only, and conv2's input gradient is read once.
	r.drop = nn.Dropout[T]{P: cfg.Dropout, Layer: layer, InPlace: true}
	r.conv2 = nn.NewConv2d(a, ws, name+".conv2", cout, cout, 3, 1, same)
	if cin != cout {
		r.skip = nn.NewConv2d(a, ws, name+".skip", cin, cout, 1, 1, [4]int{})
	}
	return r
}

// forward maps x [b, cin, h, w] to y [b, cout, h, w]; stemb is SiLU(temb) [b, tdim]. nb is
// ib is nil in training use, else the shared buffers of inference (x may be ib.cat; the output
// is the block's own).
func (r *resBlock[T]) forward(x []T, b, h, w int, stemb []T, key *DropoutKey, ib *inferBufs[T]) []T {
	p := h * w
	r.b, r.p, r.x = b, p, x
	var tmp []T
	if ib != nil {
		tmp = ib.tmp
	}
	h1 := conv(r.conv1, norm(r.norm1, x, b, p, ib), b, h, w, tmp)
	tp := r.tproj.Forward(stemb, b)
	for s := 0; s < b; s++ { // broadcast over H x W, in place in conv1's output
		for c := 0; c < r.cout; c++ {
			v := tp[s*r.cout+c]
			row := h1[(s*r.cout+c)*p : (s*r.cout+c+1)*p]
			for i := range row {
				row[i] += v
			}
		}
	}
	a2 := norm(r.norm2, h1, b, p, ib)
	var d []T
	if key != nil {
		d = r.drop.Forward(a2, key.Seed, key.Positions)
	} else {
		d = r.drop.Forward(a2, 0, nil)
	}
	h2 := r.conv2.Forward(d, b, h, w)
	sk := x
	if r.skip != nil {
		sk = conv(r.skip, x, b, h, w, tmp) // into h1's buffer: norm2 has read it
	}
	// The sum goes into conv2's output buffer, which conv2's Backward does not read.
	sk = sk[:len(h2)]
	for i, v := range sk {
		h2[i] += v
	}
	return h2
}

// backward returns dx [b, cin, h, w] and the gradient of SiLU(temb) [b, tdim] (owned by the
// block's Linear) for dy [b, cout, h, w].
func (r *resBlock[T]) backward(dy []T) (dx, dstemb []T) {
	b, p := r.b, r.p
	dh1 := r.norm2.Backward(r.drop.Backward(r.conv2.Backward(dy)))
	r.dtp = grow(r.dtp, b*r.cout)
	for i := range r.dtp {
		var acc T
		for _, v := range dh1[i*p : (i+1)*p] {
			acc += v
		}
		r.dtp[i] = acc
	}
	dstemb = r.tproj.Backward(r.dtp)
	dx1 := r.norm1.Backward(r.conv1.Backward(dh1))
	ds := dy
	if r.skip != nil {
		ds = r.skip.Backward(dy)
	}
	// The sum goes into norm1's input-gradient buffer (free until norm1's next Forward).
	ds = ds[:len(dx1)]
	for i, v := range ds {
		dx1[i] += v
	}
	return dx1, dstemb
}

// attnBlock is the original's attn_block: y = x + proj(Attention(q(n), k(n), v(n))), n = norm(x).
type attnBlock[T nn.Float] struct {
	norm    *nn.GroupNorm[T]
	q, k, v *nn.Conv2d[T]
	proj    *nn.Conv2d[T]
	core    nn.Attention[T]
	b, h, w int
}

func newAttnBlock[T nn.Float](a *nn.Arena[T], ws *nn.Workspace[T], name string, c int, cfg Config) *attnBlock[T] {
	one := func(s string) *nn.Conv2d[T] { return nn.NewConv2d(a, ws, name+"."+s, c, c, 1, 1, [4]int{}) }
	blk := &attnBlock[T]{norm: nn.NewGroupNorm(a, name+".norm", c, cfg.Groups, cfg.GNEps, false)}
	blk.q, blk.k, blk.v, blk.proj = one("q"), one("k"), one("v"), one("proj")
	blk.core.C = c
	return blk
}

// forward maps x [b, c, h, w] to y of the same shape; ib as for resBlock.forward.
func (t *attnBlock[T]) forward(x []T, b, h, w int, ib *inferBufs[T]) []T {
	t.b, t.h, t.w = b, h, w
	p := h * w
	n := norm(t.norm, x, b, p, ib)
	o := t.core.Forward(t.q.Forward(n, b, h, w), t.k.Forward(n, b, h, w), t.v.Forward(n, b, h, w), b, p)
	pr := t.proj.Forward(o, b, h, w)
	x = x[:len(pr)]
	for i, v := range x { // into proj's output buffer, which proj's Backward does not read
		pr[i] += v
	}
	return pr
}

func (t *attnBlock[T]) backward(dy []T) []T {
	dq, dk, dv := t.core.Backward(t.proj.Backward(dy))
	dn := t.q.Backward(dq) // the three gradients summed in q's input-gradient buffer
	for i, v := range t.k.Backward(dk) {
		dn[i] += v
	}
	for i, v := range t.v.Backward(dv) {
		dn[i] += v
	}
	dxn := t.norm.Backward(dn)
	dy = dy[:len(dxn)]
	for i, v := range dy { // into norm's input-gradient buffer
		dxn[i] += v
	}
	return dxn
}

func grow[T nn.Float](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n)
	}
	return buf[:n]
}
