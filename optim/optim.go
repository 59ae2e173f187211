// Package optim holds the optimizer side of a DDPM train step over flat parameter arenas
// (DESIGN.md section 4): Adam, linear learning-rate warmup, clipping by global gradient norm and
// an exponential moving average of the parameters, with the original DDPM's settings
// (Ho et al. 2020, Appendix B, and the original's scripts/run_cifar.py: Adam, lr 2e-4 warmed up
// over 5000 steps, gradient norm clipped to 1, EMA decay 0.9999).
//
// Every function works in place on []float32 arenas that share the model's parameter layout;
// nothing allocates per step and nothing reads a clock or a global RNG. Every rounding of the
// element-wise updates is spelled out (explicit float32 conversions, which forbid the compiler's
// own fusing; fused multiply-adds only where PyTorch's kernels have them, emulated exactly), and
// the one reduction (the gradient norm) sums in float64 in a fixed order, so results are bitwise
// identical on every rank, every run and every architecture. Adam's loop, the costly one (a square root and two divisions per
// element), runs over two goroutines on large arenas; its elements are independent, so the split
// changes no bit.
//
// One train step, in the original's order (diffusion_tf/tpu_utils/tpu_utils.py, run_training):
//
//	norm := optim.ClipGlobalNorm(grads, 1.0)
//	adam.Update(params, grads, optim.WarmupLR(adam.Step, 2e-4, 5000))
//	ema.Update(params)
//
// What a checkpoint must hold to resume bit-exactly: Adam's M and V arenas and its Step, and the
// EMA arena W (besides the parameters themselves). Beta1, Beta2, Eps and Decay are configuration.
package optim

import (
	"fmt"
	"math"
	"runtime"
	"sync"
)

// Defaults of the original DDPM (Ho et al. 2020, Appendix B; tf.train.AdamOptimizer defaults
// for the betas, torch.optim.Adam's eps).
const (
	DefaultBeta1  = 0.9
	DefaultBeta2  = 0.999
	DefaultEps    = 1e-8
	DefaultLR     = 2e-4   // CIFAR-10; the 256x256 runs used 2e-5
	DefaultWarmup = 5000   // steps of linear warmup
	DefaultClip   = 1.0    // maximum global gradient norm
	DefaultDecay  = 0.9999 // EMA decay
)

// Adam is torch.optim.Adam (Kingma & Ba 2015, Algorithm 1, in PyTorch's bias-corrected form;
// no weight decay, no amsgrad) over one flat arena. M and V are the first and second moment
// arenas (same layout as the parameters); Step is the number of updates applied so far.
//
// M, V and Step are the state a checkpoint stores; restore them by copying into M and V and
// setting Step.
type Adam struct {
	Beta1, Beta2, Eps float64
	M, V              []float32
	Step              int64

	half *adamHalf // the second goroutine's job, built on first use; not state
}

// parallelMin is the arena size from which Update splits its loop over two goroutines (below
// it the hand-off costs more than it saves). A variable so tests can force either path.
var parallelMin = 1 << 16

// adamKernel is one Update's coefficients and arenas; apply runs elements [lo, hi).
type adamKernel struct {
	params, grads, m, v                   []float32
	b1, c1, b2, c2, bc2sqrt, eps, negStep float32
}

// adamHalf hands the upper half of an Update to a second goroutine without allocating: run is
// built once, and `go run()` needs no closure per call.
type adamHalf struct {
	wg     sync.WaitGroup
	k      adamKernel
	lo, hi int
	run    func()
}

// NewAdam returns Adam for an arena of n parameters with the default betas and eps, zero
// moments and Step 0. It panics if n < 0.
func NewAdam(n int) *Adam {
	if n < 0 {
		panic(fmt.Sprintf("optim: NewAdam(%d): negative size", n))
	}
	return &Adam{
		Beta1: DefaultBeta1, Beta2: DefaultBeta2, Eps: DefaultEps,
		M: make([]float32, n), V: make([]float32, n),
	}
}

// Update applies one Adam step with learning rate lr to params, in place, given grads (same
// layout, already clipped and averaged over the global batch). It increments Step first, then,
// with t = Step, g = grads and all arithmetic element-wise in float32 as PyTorch does:
//
//	M = beta1*M + (1-beta1)*g
//	V = beta2*V + (1-beta2)*g*g
//	params -= lr/(1-beta1^t) * M / (sqrt(V)/sqrt(1-beta2^t) + eps)
//
// This is torch.optim.Adam's _single_tensor_adam (PyTorch 1.13). The original used
// tf.train.AdamOptimizer, which computes lr*sqrt(1-beta2^t)/(1-beta1^t) * M/(sqrt(V) + eps):
// the same update with eps replaced by eps/sqrt(1-beta2^t), so the two differ only in eps-sized
// terms.
// It panics if len(params), len(grads), len(M), len(V) differ.
func (a *Adam) Update(params, grads []float32, lr float64) {
	n := len(params)
	if len(grads) != n || len(a.M) != n || len(a.V) != n {
		panic(fmt.Sprintf("optim: Adam.Update: len(params) %d, len(grads) %d, len(M) %d, len(V) %d differ",
			n, len(grads), len(a.M), len(a.V)))
	}
	a.Step++
	t := float64(a.Step)
	// Scalars are computed in float64 (as PyTorch does in Python) and enter the float32
	// element-wise arithmetic rounded to float32 (as PyTorch's CPU kernels cast them).
	k := adamKernel{
		params: params, grads: grads[:n], m: a.M[:n], v: a.V[:n],
		b1: float32(a.Beta1), c1: float32(1 - a.Beta1),
		b2: float32(a.Beta2), c2: float32(1 - a.Beta2),
		bc2sqrt: float32(math.Sqrt(1 - math.Pow(a.Beta2, t))),
		eps:     float32(a.Eps),
		negStep: float32(-lr / (1 - math.Pow(a.Beta1, t))),
	}
	if n < parallelMin || runtime.GOMAXPROCS(0) < 2 {
		k.apply(0, n)
		return
	}
	// Every element is computed on its own, so splitting the loop changes no bit.
	if a.half == nil {
		h := &adamHalf{}
		h.run = func() { h.k.apply(h.lo, h.hi); h.wg.Done() }
		a.half = h
	}
	h := a.half
	mid := n / 2 &^ 15 // a 64-byte boundary: the halves share no cache line
	h.k, h.lo, h.hi = k, mid, n
	h.wg.Add(1)
	go h.run()
	k.apply(0, mid)
	h.wg.Wait()
	h.k = adamKernel{} // keep no reference to the caller's arenas
}

// apply runs Adam on elements [lo, hi). The rounding sequence is PyTorch's CPU kernels' as
// compiled (GCC contracts a + b*c into one fused multiply-add): with the same gradients, M, V
// and the parameters come out bit for bit equal to torch.optim.Adam's (TestAdamMatchesTorch).
// Every rounding is spelled out (sumOdd for the fused ones, explicit float32 conversions, which
// the Go spec says forbid fusing), so the result is the same on every architecture.
func (k *adamKernel) apply(lo, hi int) {
	params, grads, m, v := k.params[lo:hi], k.grads[lo:hi], k.m[lo:hi], k.v[lo:hi]
	params, m, v = params[:len(grads)], m[:len(grads)], v[:len(grads)]
	b1, c1, b2, c2, bc2sqrt, eps, negStep := k.b1, k.c1, k.b2, k.c2, k.bc2sqrt, k.eps, k.negStep
	for i, g := range grads {
		// fma32 written out (it is over the inlining budget; sumOdd is not)
		mi := float32(sumOdd(float64(c1)*float64(g), float64(b1*m[i])))            // exp_avg.mul_(beta1).add_(grad, alpha=1-beta1)
		vi := float32(sumOdd(float64(float32(c2*g))*float64(g), float64(b2*v[i]))) // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1-beta2)
		m[i], v[i] = mi, vi
		denom := float32(sqrt32(vi)/bc2sqrt) + eps        // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
		params[i] += float32(float32(negStep*mi) / denom) // param.addcdiv_(exp_avg, denom, value=-step_size)
	}
}

// sqrt32 is the correctly rounded float32 square root (rounding the float64 root once more is
// exact: 53 >= 2*24 + 2).
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }

// fma32 returns a*b + c rounded once to float32, as a fused multiply-add does: a*b is exact in
// float64 (24+24 bits) and sumOdd rounds the float64 sum to odd, which makes the final rounding
// to float32 the correct one.
func fma32(a, b, c float32) float32 {
	return float32(sumOdd(float64(a)*float64(b), float64(c)))
}

// sumOdd returns p + c rounded to odd: the float64 next to the exact sum toward zero, with its
// last bit set when the sum is inexact (Boldo & Melquiond 2008, "Emulation of FMA and correctly
// rounded sums: proved algorithms using rounding to odd"). Rounding that once more to float32
// is then the correct rounding of the exact sum (53 >= 24 + 2). Branch-free, small enough to
// inline.
func sumOdd(p, c float64) float64 {
	s := p + c
	bv := s - p
	e := (p - (s - bv)) + (c - bv) // TwoSum: p + c = s + e exactly (NaN when s overflows)
	var inexact uint64
	if e != 0 && e == e {
		inexact = 1
	}
	bits := math.Float64bits(s)
	away := (bits ^ math.Float64bits(e)) >> 63 & inexact // s was rounded away from zero
	return math.Float64frombits((bits - away) | inexact)
}

// WarmupLR is the original's linear warmup, get_warmed_up_lr (diffusion_tf/utils.py):
// base * min(step/warmup, 1), and base when warmup <= 0.
//
// step counts from 0: it is the number of updates applied before this one (Adam.Step before
// Update), as the original passes TF's global_step, which apply_gradients increments after the
// update. So the very first update has learning rate 0 and the rate reaches base at step ==
// warmup; with the paper's settings, 2e-4 * min(step/5000, 1). It panics if step < 0.
func WarmupLR(step int64, base float64, warmup int64) float64 {
	if step < 0 {
		panic(fmt.Sprintf("optim: WarmupLR: negative step %d", step))
	}
	if warmup <= 0 || step >= warmup {
		return base
	}
	return base * (float64(step) / float64(warmup))
}

// normLanes is the number of partial sums GlobalNorm keeps: element i goes to lane i%normLanes,
// and the lanes are added in a fixed tree at the end. The order is part of the result's
// definition (it is what makes the norm bitwise reproducible); the lanes only buy instruction
// parallelism.
const normLanes = 8

// GlobalNorm returns the Euclidean norm of grads, sqrt(sum g^2), summed in float64: element i
// into lane i%8, lanes combined as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)). A NaN or Inf element
// gives a NaN or Inf norm.
func GlobalNorm(grads []float32) float64 {
	var l [normLanes]float64
	i := 0
	for ; i+normLanes <= len(grads); i += normLanes {
		g := grads[i : i+normLanes : i+normLanes]
		x0, x1, x2, x3 := float64(g[0]), float64(g[1]), float64(g[2]), float64(g[3])
		x4, x5, x6, x7 := float64(g[4]), float64(g[5]), float64(g[6]), float64(g[7])
		l[0] += float64(x0 * x0)
		l[1] += float64(x1 * x1)
		l[2] += float64(x2 * x2)
		l[3] += float64(x3 * x3)
		l[4] += float64(x4 * x4)
		l[5] += float64(x5 * x5)
		l[6] += float64(x6 * x6)
		l[7] += float64(x7 * x7)
	}
	for k := 0; i < len(grads); i, k = i+1, k+1 {
		x := float64(grads[i])
		l[k] += float64(x * x)
	}
	sum := ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
	return math.Sqrt(sum)
}

// ClipGlobalNorm scales grads in place so their global norm is at most maxNorm and returns the
// norm before clipping, with torch.nn.utils.clip_grad_norm_'s semantics: with
// coef = maxNorm/(norm + 1e-6), grads are multiplied by coef only when coef < 1 (so a norm at
// or below maxNorm - 1e-6 leaves them untouched). The norm is GlobalNorm's (float64, fixed
// order). A non-finite norm (NaN or Inf in grads) is returned as is and grads are left
// unchanged: the caller must check it and skip or stop (scaling would only spread the NaN).
// It panics if maxNorm is negative or NaN.
//
// The original (tf.clip_by_global_norm) scales by maxNorm/max(norm, maxNorm), which differs only
// by the 1e-6.
func ClipGlobalNorm(grads []float32, maxNorm float64) (norm float64) {
	if !(maxNorm >= 0) {
		panic(fmt.Sprintf("optim: ClipGlobalNorm: maxNorm %v must be >= 0", maxNorm))
	}
	norm = GlobalNorm(grads)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm
	}
	coef := maxNorm / (norm + 1e-6)
	if coef < 1 {
		Scale(grads, coef)
	}
	return norm
}

// Scale multiplies x by s in place (s rounded to float32 once). The trainer uses it to turn the
// all-reduced gradient sum into the mean over the global batch.
func Scale(x []float32, s float64) {
	f := float32(s)
	for i := range x {
		x[i] *= f
	}
}

// EMA is an exponential moving average of the parameters, W = Decay*W + (1-Decay)*params after
// every step. W is the arena a checkpoint stores and sampling uses.
type EMA struct {
	Decay float64
	W     []float32
}

// NewEMA returns an EMA whose W is a copy of params (the initial parameters, as the original:
// tf.train.ExponentialMovingAverage initializes its shadow variables from the variables) and
// whose Decay is decay. It panics if decay is outside [0, 1].
//
// The original also forces decay 1e-10 (a plain copy) at global_step 0; because the warmed-up
// learning rate is 0 on that step, the parameters are still the initial ones then, so starting
// from a copy and applying Decay from the first step gives the same EMA.
func NewEMA(params []float32, decay float64) *EMA {
	checkDecay(decay)
	w := make([]float32, len(params))
	copy(w, params)
	return &EMA{Decay: decay, W: w}
}

// Update folds params into the average: W = Decay*W + (1-Decay)*params (EMAUpdate).
func (e *EMA) Update(params []float32) { EMAUpdate(e.W, params, e.Decay) }

// EMAUpdate sets ema = decay*ema + (1-decay)*params element-wise, computed in float64 and
// rounded once to float32 (with decay 0.9999 the (1-decay) share is small next to ema, so only
// one rounding per step keeps it from being eaten by float32 rounding of intermediate terms).
// It panics if the lengths differ or decay is outside [0, 1].
func EMAUpdate(ema, params []float32, decay float64) {
	if len(ema) != len(params) {
		panic(fmt.Sprintf("optim: EMAUpdate: len(ema) %d != len(params) %d", len(ema), len(params)))
	}
	checkDecay(decay)
	keep, take := decay, 1-decay
	params = params[:len(ema)]
	for i, p := range params {
		ema[i] = float32(float64(keep*float64(ema[i])) + float64(take*float64(p)))
	}
}

func checkDecay(decay float64) {
	if !(decay >= 0 && decay <= 1) {
		panic(fmt.Sprintf("optim: EMA decay %v outside [0, 1]", decay))
	}
}
