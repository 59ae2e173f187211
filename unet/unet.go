// Package unet is the DDPM noise-prediction network eps_theta(x_t, t) (Ho et al. 2020,
// Appendix B; the original models/unet.py), built from the nn layer engine.
//
// A Net owns one parameter arena and one gradient arena (flat slices; see nn.Arena). Their
// order is fixed: the order of the reference PyTorch model's state_dict (anchors/pytorch/
// unet_bench.py), with the same names and shapes, listed by Tensors. Checkpoints, all-reduce,
// the optimizer and the EMA all work on these arenas whole.
//
// Model (float32) is what training uses; NewFloat64 builds the same network in float64 for
// finite-difference and parity checks.
package unet

import (
	"fmt"

	"ddpm/diffusion"
	"ddpm/nn"
)

// DropoutKey selects the dropout masks of one Forward: the mask of sample b in dropout layer l
// (ResBlocks numbered 0, 1, ... in parameter order) comes from rng.New(Seed,
// rng.Stream(Positions[b], rng.PurposeDropout<<32|l)). len(Positions) must equal the batch.
type DropoutKey struct {
	Seed      uint64
	Positions []uint64
}

// Model is the float32 U-Net used for training and sampling.
type Model = Net[float32]

type stepKind int

const (
	stepRes  stepKind = iota // ResBlock, concatenating skip pop first when pop >= 0
	stepAttn                 // attention block
	stepDown                 // 3x3 stride-2 conv, TF 'SAME' padding
	stepUp                   // nearest 2x upsample, then 3x3 conv
	stepPush                 // push h on the skip stack as skip number idx
)

type step[T nn.Float] struct {
	kind stepKind
	res  *resBlock[T]
	attn *attnBlock[T]
	conv *nn.Conv2d[T]
	up   *nn.Upsample2x[T]
	idx  int // skip index popped (stepRes, -1 for none) or pushed (stepPush)
	cin  int // input channels (for the concatenation: channels of h before it)
	cout int
}

// Net is the U-Net over element type T. Build it with New or NewFloat64.
type Net[T nn.Float] struct {
	cfg   Config
	arena nn.Arena[T]
	ws    nn.Workspace[T]
	inits []initSpec[T]

	temb0, temb1 *nn.Linear[T]
	tact0, tact1 nn.SiLU[T]
	convIn       *nn.Conv2d[T]
	steps        []step[T]
	nskips       int
	normOut      *nn.GroupNorm[T]
	convOut      *nn.Conv2d[T]

	// per-batch state
	b      int
	emb32  []float32
	emb    []T
	stemb  []T   // SiLU(temb) [B, 4Ch], the input of every temb_proj
	skips  [][]T // forward: the pushed tensors (views of layer outputs)
	shapes [][3]int
	dskips [][]T // backward: gradients arriving at each skip
	dstemb []T
	dsum   [][]T // per push step: dh + dskip

	infer     bool // SetInference: Forward keeps nothing for Backward
	lastInfer bool // the last Forward ran in inference mode
	bufs      inferBufs[T]
	gradsUsed bool // Backward ran or Grads was handed out: the gradient arena may be non-zero
}

// inferBufs are the shared output buffers of inference (SetInference), each b*normElems long:
// outputs that the next layer(s) of the same block consume at once go there instead of into
// buffers of their own.
type inferBufs[T nn.Float] struct {
	norm []T // every GroupNorm's output
	cat  []T // a ResBlock's concatenated input (alive until its skip conv)
	tmp  []T // conv1's output (then the skip conv's) in a ResBlock; the upsampled input of an up conv
}

// SetInference switches Forward between training use (on false, the default: every layer keeps
// what Backward needs) and inference (on true: outputs consumed at once by the next layer(s)
// of the same block, i.e. every GroupNorm's, a ResBlock's concatenated input, its conv1 and
// skip conv outputs, and the upsampled input of an up conv, go into three buffers shared by all
// blocks, and GroupNorms keep no sigmoids; this lowers the resident memory of a forward pass).
// Outputs are bit-identical either way; Backward panics after a Forward in inference mode.
func (n *Net[T]) SetInference(on bool) { n.infer = on }

// normElems is the largest per-sample element count of a GroupNorm input, which bounds every
// output inferBufs holds (an upsampled tensor is the input of a ResBlock at the next level).
func (n *Net[T]) normElems() int {
	r := n.cfg.Resolution
	hh, ww := r, r
	m := 0
	for i := range n.steps {
		s := &n.steps[i]
		switch s.kind {
		case stepRes:
			m = max(m, max(s.res.cin, s.res.cout)*hh*ww)
		case stepAttn:
			m = max(m, s.cout*hh*ww)
		case stepDown:
			hh, ww = s.conv.OutSize(hh, ww)
		case stepUp:
			hh, ww = 2*hh, 2*ww
		}
	}
	return max(m, n.normOut.C*hh*ww)
}

// norm runs g on x [b, C, p]: Forward in training use (ib nil), ForwardInto ib.norm in inference.
func norm[T nn.Float](g *nn.GroupNorm[T], x []T, b, p int, ib *inferBufs[T]) []T {
	if ib == nil {
		return g.Forward(x, b, p)
	}
	return g.ForwardInto(ib.norm, x, b, p)
}

// conv runs c on x [b, Cin, h, w]: Forward with out nil (training use), else ForwardInto out.
func conv[T nn.Float](c *nn.Conv2d[T], x []T, b, h, w int, out []T) []T {
	if out == nil {
		return c.Forward(x, b, h, w)
	}
	return c.ForwardInto(out, x, b, h, w)
}

// New builds the float32 model for cfg with all parameters zero; call Init next.
func New(cfg Config) (*Model, error) { return newNet[float32](cfg) }

// NewFloat64 builds the float64 model for cfg (reference checks).
func NewFloat64(cfg Config) (*Net[float64], error) { return newNet[float64](cfg) }

// NumParams returns the parameter count of cfg without allocating the arenas.
func NumParams(cfg Config) (int, error) {
	n, err := build[float32](cfg)
	if err != nil {
		return 0, err
	}
	return n.arena.Len(), nil
}

func newNet[T nn.Float](cfg Config) (*Net[T], error) {
	n, err := build[T](cfg)
	if err != nil {
		return nil, err
	}
	n.arena.Alloc()
	return n, nil
}

// build constructs every layer in the reference state_dict order (arena not allocated).
func build[T nn.Float](cfg Config) (*Net[T], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.clone()
	n := &Net[T]{cfg: cfg}
	a, ws := &n.arena, &n.ws
	tdim := 4 * cfg.Ch
	same := [4]int{1, 1, 1, 1}
	tfSame := [4]int{0, 0, 1, 1}
	var layer uint64
	res := func(name string, cin, cout int, pop int) {
		r := newResBlock(a, ws, name, cin, cout, tdim, cfg, layer)
		layer++
		n.steps = append(n.steps, step[T]{kind: stepRes, res: r, idx: pop, cout: cout})
		n.initConv(r.conv1, 1)
		n.initLinear(r.tproj)
		n.initConv(r.conv2, 0)
		if r.skip != nil {
			n.initConv(r.skip, 1)
		}
		n.initNorm(r.norm1)
		n.initNorm(r.norm2)
	}
	attn := func(name string, c int) {
		t := newAttnBlock(a, ws, name, c, cfg)
		n.steps = append(n.steps, step[T]{kind: stepAttn, attn: t, cout: c})
		n.initNorm(t.norm)
		n.initConv(t.q, 1)
		n.initConv(t.k, 1)
		n.initConv(t.v, 1)
		n.initConv(t.proj, 0)
	}
	down := func(name string, c int) {
		conv := nn.NewConv2d(a, ws, name+".conv", c, c, 3, 2, tfSame)
		n.steps = append(n.steps, step[T]{kind: stepDown, conv: conv, cout: c})
		n.initConv(conv, 1)
	}
	up := func(name string, c int) {
		conv := nn.NewConv2d(a, ws, name+".conv", c, c, 3, 1, same)
		n.steps = append(n.steps, step[T]{kind: stepUp, conv: conv, up: &nn.Upsample2x[T]{}, cout: c})
		n.initConv(conv, 1)
	}
	var stack []int // channels of the pushed skips, as a stack of skip indices
	var skipCh []int
	push := func(c int) {
		n.steps = append(n.steps, step[T]{kind: stepPush, idx: len(skipCh), cout: c})
		stack = append(stack, len(skipCh))
		skipCh = append(skipCh, c)
	}
	pop := func() (int, int) {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return i, skipCh[i]
	}

	n.temb0 = nn.NewLinear(a, "temb.dense0", cfg.Ch, tdim)
	n.temb1 = nn.NewLinear(a, "temb.dense1", tdim, tdim)
	n.initLinear(n.temb0)
	n.initLinear(n.temb1)
	n.convIn = nn.NewConv2d(a, ws, "conv_in", cfg.InCh, cfg.Ch, 3, 1, same)
	n.convIn.NoInputGrad = true
	n.initConv(n.convIn, 1)

	levels := len(cfg.ChMult)
	cur, r := cfg.Ch, cfg.Resolution
	// Down path. The PyTorch module registers a level's blocks, then its attentions, then its
	// downsample; parameters are created in that order while steps run interleaved.
	if cfg.Layout == LayoutDDPM {
		push(cur)
	}
	for i := 0; i < levels; i++ {
		cout := cfg.Ch * cfg.ChMult[i]
		var blocks []step[T]
		var ins []int
		for j := 0; j < cfg.NumResBlocks; j++ {
			ins = append(ins, cur)
			if cfg.Layout == LayoutDDPM {
				res(fmt.Sprintf("down.%d.blocks.%d", i, j), cur, cout, -1)
			} else {
				res(fmt.Sprintf("d%d_res", i), cur, cout, -1)
			}
			blocks = append(blocks, n.pop())
			cur = cout
		}
		var attns []*step[T]
		for j := range blocks {
			if cfg.attnAt(r) {
				if cfg.Layout == LayoutDDPM {
					attn(fmt.Sprintf("down.%d.attns.%d", i, j), cur)
				} else {
					attn(fmt.Sprintf("d%d_attn", i), cur)
				}
				s := n.pop()
				attns = append(attns, &s)
			} else {
				attns = append(attns, nil)
			}
		}
		for j := range blocks {
			blocks[j].cin = ins[j]
			n.steps = append(n.steps, blocks[j])
			if attns[j] != nil {
				n.steps = append(n.steps, *attns[j])
			}
			if cfg.Layout == LayoutDDPM || j == len(blocks)-1 {
				push(cur)
			}
		}
		if i != levels-1 {
			if cfg.Layout == LayoutDDPM {
				down(fmt.Sprintf("down.%d.down", i), cur)
				push(cur)
			} else {
				down(fmt.Sprintf("d%d_down", i), cur)
			}
			r /= 2
		}
	}
	// Middle.
	if cfg.Layout == LayoutDDPM {
		res("mid1", cur, cur, -1)
		attn("mid_attn", cur)
		res("mid2", cur, cur, -1)
	} else {
		res("mid_res1", cur, cur, -1)
		attn("mid_attn", cur)
		res("mid_res2", cur, cur, -1)
	}
	// Up path.
	nup := cfg.NumResBlocks
	if cfg.Layout == LayoutDDPM {
		nup++
	}
	for i := levels - 1; i >= 0; i-- {
		k := levels - 1 - i
		cout := cfg.Ch * cfg.ChMult[i]
		var blocks []step[T]
		for j := 0; j < nup; j++ {
			idx, sc := pop()
			if cfg.Layout == LayoutDDPM {
				res(fmt.Sprintf("up.%d.blocks.%d", k, j), cur+sc, cout, idx)
			} else {
				res(fmt.Sprintf("u%d_res", i), cur+sc, cout, idx)
			}
			s := n.pop()
			s.cin = cur
			blocks = append(blocks, s)
			cur = cout
		}
		var attns []*step[T]
		for j := range blocks {
			if cfg.attnAt(r) {
				if cfg.Layout == LayoutDDPM {
					attn(fmt.Sprintf("up.%d.attns.%d", k, j), cur)
				} else {
					attn(fmt.Sprintf("u%d_attn", i), cur)
				}
				s := n.pop()
				attns = append(attns, &s)
			} else {
				attns = append(attns, nil)
			}
		}
		for j := range blocks {
			n.steps = append(n.steps, blocks[j])
			if attns[j] != nil {
				n.steps = append(n.steps, *attns[j])
			}
		}
		if i != 0 {
			if cfg.Layout == LayoutDDPM {
				up(fmt.Sprintf("up.%d.upsample", k), cur)
			} else {
				up(fmt.Sprintf("u%d_up", i), cur)
			}
			r *= 2
		}
	}
	if len(stack) != 0 {
		panic("unet: skip stack not empty after the up path")
	}
	n.nskips = len(skipCh)
	n.normOut = nn.NewGroupNorm(a, "norm_out", cur, cfg.Groups, cfg.GNEps, true)
	n.initNorm(n.normOut)
	n.convOut = nn.NewConv2d(a, ws, "conv_out", cur, cfg.OutCh, 3, 1, same)
	n.initConv(n.convOut, 0)
	return n, nil
}

// pop removes and returns the last appended step (used to reorder construction vs execution).
func (n *Net[T]) pop() step[T] {
	s := n.steps[len(n.steps)-1]
	n.steps = n.steps[:len(n.steps)-1]
	return s
}

// Config returns a copy of the model's configuration.
func (n *Net[T]) Config() Config { return n.cfg.clone() }

// NumParams is the number of scalar parameters.
func (n *Net[T]) NumParams() int { return n.arena.Len() }

// Params is the parameter arena (len NumParams()), in Tensors order. Writes change the model.
func (n *Net[T]) Params() []T { return n.arena.Data() }

// Grads is the gradient arena, same layout as Params; Backward accumulates into it.
func (n *Net[T]) Grads() []T {
	n.gradsUsed = true
	return n.arena.Grad()
}

// ZeroGrads sets every gradient to zero.
func (n *Net[T]) ZeroGrads() { clear(n.arena.Grad()) }

// Tensors lists every parameter tensor in arena order with its PyTorch state_dict name, PyTorch
// shape, offset and length.
func (n *Net[T]) Tensors() []nn.ParamInfo { return n.arena.Infos() }

// Forward computes eps_theta(x_t, t) [batch, OutCh, R, R] for xt [batch, InCh, R, R] and
// timesteps t [batch] (0-based). drop selects training-mode dropout masks; nil means evaluation
// (no dropout). The returned buffer is owned by the model and valid until the next Forward.
// It panics if the lengths do not match batch.
func (n *Net[T]) Forward(xt []T, t []int32, batch int, drop *DropoutKey) []T {
	cfg := n.cfg
	r := cfg.Resolution
	if batch < 1 || len(xt) != batch*cfg.InCh*r*r || len(t) != batch {
		panic(fmt.Sprintf("unet: Forward: len(xt) = %d, len(t) = %d, want %d*%d*%d*%d and %d",
			len(xt), len(t), batch, cfg.InCh, r, r, batch))
	}
	if drop != nil && len(drop.Positions) != batch {
		panic(fmt.Sprintf("unet: Forward: %d dropout positions for batch %d", len(drop.Positions), batch))
	}
	n.b = batch
	n.emb32 = growF32(n.emb32, batch*cfg.Ch)
	diffusion.TimestepEmbedding(n.emb32, t, cfg.Ch)
	n.emb = grow(n.emb, len(n.emb32))
	for i, v := range n.emb32 {
		n.emb[i] = T(v)
	}
	n.stemb = n.tact1.Forward(n.temb1.Forward(n.tact0.Forward(n.temb0.Forward(n.emb, batch)), batch))

	if len(n.skips) != n.nskips {
		n.skips = make([][]T, n.nskips)
		n.shapes = make([][3]int, n.nskips)
		n.dskips = make([][]T, n.nskips)
		n.dsum = make([][]T, n.nskips)
	}
	var ib *inferBufs[T] // inference: the shared output buffers
	n.lastInfer = n.infer
	if n.infer {
		ib = &n.bufs
		e := batch * n.normElems()
		ib.norm, ib.cat, ib.tmp = grow(ib.norm, e), grow(ib.cat, e), grow(ib.tmp, e)
	}
	h := n.convIn.Forward(xt, batch, r, r)
	c, hh, ww := cfg.Ch, r, r
	for i := range n.steps {
		s := &n.steps[i]
		switch s.kind {
		case stepRes:
			x := h
			if s.idx >= 0 {
				sk := n.skips[s.idx]
				x = s.res.catForward(h, sk, batch, c, n.shapes[s.idx][0], hh*ww, ib)
				c += n.shapes[s.idx][0]
			}
			h = s.res.forward(x, batch, hh, ww, n.stemb, drop, ib)
		case stepAttn:
			h = s.attn.forward(h, batch, hh, ww, ib)
		case stepDown:
			h = s.conv.Forward(h, batch, hh, ww)
			hh, ww = s.conv.OutSize(hh, ww)
		case stepUp:
			if ib == nil {
				h = s.conv.Forward(s.up.Forward(h, batch, c, hh, ww), batch, 2*hh, 2*ww)
			} else {
				h = s.conv.Forward(s.up.ForwardInto(ib.tmp, h, batch, c, hh, ww), batch, 2*hh, 2*ww)
			}
			hh, ww = 2*hh, 2*ww
		case stepPush:
			n.skips[s.idx] = h
			n.shapes[s.idx] = [3]int{c, hh, ww}
		}
		c = s.cout
	}
	return n.convOut.Forward(norm(n.normOut, h, batch, hh*ww, ib), batch, hh, ww)
}

// Backward accumulates d loss/d params into Grads for dEps = d loss / d eps_theta [batch,
// OutCh, R, R], where batch and the activations are those of the last Forward. It panics if
// that Forward ran in inference mode (SetInference).
func (n *Net[T]) Backward(dEps []T) {
	if n.lastInfer {
		panic("unet: Backward after a Forward in inference mode")
	}
	n.gradsUsed = true
	cfg := n.cfg
	r := cfg.Resolution
	if n.b == 0 || len(dEps) != n.b*cfg.OutCh*r*r {
		panic(fmt.Sprintf("unet: Backward: len(dEps) = %d, want %d*%d*%d*%d after a Forward", len(dEps), n.b, cfg.OutCh, r, r))
	}
	n.dstemb = grow(n.dstemb, n.b*4*cfg.Ch)
	clear(n.dstemb)
	dh := n.normOut.Backward(n.convOut.Backward(dEps))
	for i := len(n.steps) - 1; i >= 0; i-- {
		s := &n.steps[i]
		switch s.kind {
		case stepRes:
			dx, dst := s.res.backward(dh)
			for j, v := range dst {
				n.dstemb[j] += v
			}
			dh = dx
			if s.idx >= 0 {
				var dskip []T
				dh, dskip = s.res.cat.Backward(dx)
				n.dskips[s.idx] = grow(n.dskips[s.idx], len(dskip))
				copy(n.dskips[s.idx], dskip)
			}
		case stepAttn:
			dh = s.attn.backward(dh)
		case stepDown:
			dh = s.conv.Backward(dh)
		case stepUp:
			dh = s.up.Backward(s.conv.Backward(dh))
		case stepPush:
			sum := grow(n.dsum[s.idx], len(dh))
			for j, v := range n.dskips[s.idx] {
				sum[j] = dh[j] + v
			}
			n.dsum[s.idx] = sum
			dh = sum
		}
	}
	n.convIn.Backward(dh)
	n.temb0.Backward(n.tact0.Backward(n.temb1.Backward(n.tact1.Backward(n.dstemb))))
}

// catForward concatenates h [b, ch, p] and the skip [b, cs, p] for the block's input (into
// ib.cat in inference).
func (r *resBlock[T]) catForward(h, skip []T, b, ch, cs, p int, ib *inferBufs[T]) []T {
	if r.cat == nil {
		r.cat = &nn.Concat[T]{}
	}
	if ib != nil {
		return r.cat.ForwardInto(ib.cat, h, skip, b, ch, cs, p)
	}
	return r.cat.Forward(h, skip, b, ch, cs, p)
}

func growF32(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}
