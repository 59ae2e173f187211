package optim

import (
	"math"
	"math/big"
	"runtime"
	"strings"
	"testing"

	"ddpm/internal/rng"
)

// float32Tol: element-wise float32 arithmetic against a float64 reference, a few roundings deep.
const float32Tol = 1e-6

func relClose(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(math.Abs(want), 1e-30)
}

// TestAdamHand checks two Adam steps against values computed by hand in float64 from the
// bias-corrected update (Kingma & Ba 2015, Algorithm 1, PyTorch's form), lr 0.1.
func TestAdamHand(t *testing.T) {
	p := []float32{1, 1, 1, 1}
	a := NewAdam(4)
	a.Update(p, []float32{0.5, -2, 0, 1e-3}, 0.1)
	// Step 1: M = 0.1 g, V = 0.001 g^2, the corrected update is lr * g/(|g| + eps).
	want := []struct{ p, m, v float64 }{
		{0.900000002, 0.05, 2.5e-4},
		{1.0999999995, -0.2, 4e-3},
		{1.0, 0, 0}, // g = 0: M = V = 0 and the update is 0/(0+eps) = 0
		{0.90000099999, 1e-4, 1e-9},
	}
	check := func(step int) {
		t.Helper()
		if a.Step != int64(step) {
			t.Fatalf("Step = %d, want %d", a.Step, step)
		}
		for i, w := range want {
			if !relClose(float64(p[i]), w.p, float32Tol) || !relClose(float64(a.M[i]), w.m, float32Tol) ||
				!relClose(float64(a.V[i]), w.v, float32Tol) {
				t.Errorf("step %d, element %d: p %v m %v v %v, want %v %v %v", step, i, p[i], a.M[i], a.V[i], w.p, w.m, w.v)
			}
		}
	}
	check(1)
	a.Update(p, []float32{0.5, 1, 3, -1e-3}, 0.1)
	// Step 2: bias corrections 1-0.9^2 = 0.19 and 1-0.999^2 = 0.001999; element 0 has
	// V/0.001999 = 0.25 exactly, so its update is 0.1 * (0.095/0.19)/(0.5 + 1e-8).
	want = []struct{ p, m, v float64 }{
		{0.8000000040000006, 0.095, 4.9975e-4},
		{1.1266337032975684, -0.08, 4.996e-3},
		{0.9255863179940036, 0.3, 9e-3},
		{0.9052641052536842, -1e-5, 1.999e-9},
	}
	check(2)
}

func TestAdamZeroLRKeepsParamsButMovesMoments(t *testing.T) {
	p := []float32{0.25, -3}
	a := NewAdam(2)
	a.Update(p, []float32{1, 2}, 0)
	if p[0] != 0.25 || p[1] != -3 {
		t.Errorf("lr 0 changed the parameters: %v", p)
	}
	if a.M[0] != float32(1-DefaultBeta1) || a.V[1] != float32(float32(1-DefaultBeta2)*2)*2 || a.Step != 1 {
		t.Errorf("moments %v %v step %d", a.M, a.V, a.Step)
	}
}

func TestWarmupLR(t *testing.T) {
	cases := []struct {
		step, warmup int64
		base, want   float64
	}{
		{0, 5000, 2e-4, 0},
		{1, 5000, 2e-4, 4e-8},
		{2500, 5000, 2e-4, 1e-4},
		{4999, 5000, 2e-4, 1.9996e-4},
		{5000, 5000, 2e-4, 2e-4},
		{800000, 5000, 2e-4, 2e-4},
		{0, 0, 2e-5, 2e-5},
		{7, -1, 2e-5, 2e-5},
	}
	for _, c := range cases {
		if got := WarmupLR(c.step, c.base, c.warmup); !relClose(got, c.want, 1e-12) && got != c.want {
			t.Errorf("WarmupLR(%d, %g, %d) = %g, want %g", c.step, c.base, c.warmup, got, c.want)
		}
	}
}

func TestClipGlobalNorm(t *testing.T) {
	g := []float32{3, 4}
	if n := ClipGlobalNorm(g, 10); n != 5 || g[0] != 3 || g[1] != 4 {
		t.Errorf("below the limit: norm %v, grads %v; want 5 and unchanged", n, g)
	}
	g = []float32{3, 4}
	if c := float32(1 / (5 + 1e-6)); ClipGlobalNorm(g, 1) != 5 || g[0] != 3*c || g[1] != 4*c {
		t.Errorf("above the limit: grads %v; want norm 5 and grads * 1/(5+1e-6)", g)
	}
	if after := GlobalNorm(g); !relClose(after, 1, 1e-6) {
		t.Errorf("norm after clipping %v, want 1", after)
	}
	// PyTorch semantics at the boundary: norm == maxNorm still scales by maxNorm/(norm+1e-6).
	g = []float32{3, 4}
	ClipGlobalNorm(g, 5)
	if c := float32(5 / (5 + 1e-6)); g[0] != 3*c || g[1] != 4*c {
		t.Errorf("at the limit: grads %v, want scaled by %v", g, c)
	}
	// A zero gradient stays zero (coef = maxNorm/1e-6 >= 1).
	g = []float32{0, 0, 0}
	if n := ClipGlobalNorm(g, 1); n != 0 || g[0] != 0 {
		t.Errorf("zero grads: norm %v grads %v", n, g)
	}
	// Non-finite: norm reported, grads untouched.
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
		g = []float32{1, bad, 100}
		n := ClipGlobalNorm(g, 1)
		if !math.IsNaN(n) && !math.IsInf(n, 1) {
			t.Errorf("grads with %v: norm %v, want non-finite", bad, n)
		}
		if g[0] != 1 || g[2] != 100 {
			t.Errorf("grads with %v were scaled: %v", bad, g)
		}
	}
}

// TestGlobalNormAccuracyAndOrder compares the norm of 100,003 values of mixed magnitude with the
// exact sum (math/big) and with the documented lane order, bit for bit.
func TestGlobalNormAccuracyAndOrder(t *testing.T) {
	const n = 100_003
	src := rng.New(11, 0)
	g := make([]float32, n)
	exact := new(big.Float).SetPrec(512)
	var lanes [8]float64
	for i := range g {
		g[i] = float32(src.NormFloat64() * math.Pow(10, float64(i%7)-3))
		x := new(big.Float).SetFloat64(float64(g[i]))
		exact.Add(exact, x.Mul(x, x))
		lanes[i%8] += float64(g[i]) * float64(g[i])
	}
	want, _ := exact.Sqrt(exact).Float64()
	got := GlobalNorm(g)
	if !relClose(got, want, 1e-13) {
		t.Errorf("GlobalNorm = %.17g, exact %.17g", got, want)
	}
	order := math.Sqrt(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))
	if got != order {
		t.Errorf("GlobalNorm = %.17g, the documented lane order gives %.17g", got, order)
	}
}

func TestEMA(t *testing.T) {
	p := []float32{3, -2}
	e := NewEMA([]float32{1, 2}, 0.9)
	e.Update(p)
	if !relClose(float64(e.W[0]), 1.2, 1e-7) || !relClose(float64(e.W[1]), 1.6, 1e-7) {
		t.Errorf("one step, decay 0.9: %v, want [1.2 1.6]", e.W)
	}
	// Against a fixed target the EMA closes the gap geometrically: W_k = p + (W_0 - p) d^k.
	params := []float32{0.5, -0.25, 4}
	e = NewEMA(params, DefaultDecay)
	params[0] = 7 // NewEMA must have copied, not aliased
	if e.W[0] != 0.5 {
		t.Fatalf("NewEMA aliases params")
	}
	target := []float32{1.5, 0.75, 4}
	for range 1000 {
		e.Update(target)
	}
	w0 := []float64{0.5, -0.25, 4}
	for i := range target {
		want := float64(target[i]) + (w0[i]-float64(target[i]))*math.Pow(DefaultDecay, 1000)
		if !relClose(float64(e.W[i]), want, 2e-6) {
			t.Errorf("after 1000 steps W[%d] = %.9g, want %.9g", i, e.W[i], want)
		}
	}
	if e.W[2] != 4 {
		t.Errorf("a parameter equal to its average drifted: %v", e.W[2])
	}
}

func TestPanics(t *testing.T) {
	cases := []struct {
		name, msg string
		f         func()
	}{
		{"adam lengths", "optim: Adam.Update: len(params) 2, len(grads) 3", func() { NewAdam(2).Update(make([]float32, 2), make([]float32, 3), 1) }},
		{"adam arena", "len(M) 3", func() { NewAdam(3).Update(make([]float32, 2), make([]float32, 2), 1) }},
		{"negative size", "optim: NewAdam(-1)", func() { NewAdam(-1) }},
		{"negative step", "optim: WarmupLR: negative step -1", func() { WarmupLR(-1, 1, 1) }},
		{"maxNorm NaN", "optim: ClipGlobalNorm: maxNorm NaN", func() { ClipGlobalNorm(nil, math.NaN()) }},
		{"maxNorm negative", "maxNorm -1", func() { ClipGlobalNorm(nil, -1) }},
		{"ema lengths", "optim: EMAUpdate: len(ema) 1 != len(params) 2", func() { EMAUpdate(make([]float32, 1), make([]float32, 2), 0.5) }},
		{"decay", "optim: EMA decay 1.5 outside [0, 1]", func() { NewEMA(nil, 1.5) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				s, _ := recover().(string)
				if !strings.Contains(s, c.msg) {
					t.Errorf("panic %q, want one containing %q", s, c.msg)
				}
			}()
			c.f()
		})
	}
}

func TestNoAllocations(t *testing.T) {
	n := parallelMin + 4099 // the two-goroutine path
	p, g := make([]float32, n), make([]float32, n)
	for i := range g {
		g[i] = float32(i%13) - 6
	}
	a, e := NewAdam(n), NewEMA(p, DefaultDecay)
	allocs := testing.AllocsPerRun(20, func() {
		ClipGlobalNorm(g, 1)
		a.Update(p, g, WarmupLR(a.Step, 2e-4, 5000))
		e.Update(p)
	})
	if allocs != 0 {
		t.Errorf("one optimizer step allocates %v times, want 0", allocs)
	}
}

// TestDeterministic: the same inputs give bitwise the same state, whatever the slice's
// alignment in the arena (a view at an odd offset exercises the lane tail).
func TestDeterministic(t *testing.T) {
	run := func(off int) ([]float32, []float32, float64) {
		const n = 1001
		buf := make([]float32, n+off)
		p := buf[off:]
		src := rng.New(3, 1)
		src.FillNormal(p)
		g := make([]float32, n)
		a := NewAdam(n)
		var norm float64
		for s := range 5 {
			src.FillNormal(g)
			norm = ClipGlobalNorm(g, 1)
			a.Update(p, g, WarmupLR(int64(s), 1e-2, 2))
		}
		return append([]float32(nil), p...), append([]float32(nil), a.V...), norm
	}
	p0, v0, n0 := run(0)
	for _, off := range []int{1, 3, 7} {
		p, v, n := run(off)
		if n != n0 {
			t.Errorf("offset %d: norm %v != %v", off, n, n0)
		}
		for i := range p {
			if math.Float32bits(p[i]) != math.Float32bits(p0[i]) || math.Float32bits(v[i]) != math.Float32bits(v0[i]) {
				t.Fatalf("offset %d: element %d differs", off, i)
			}
		}
	}
}

// TestParallelMatchesSerial: splitting Update over two goroutines changes no bit.
func TestParallelMatchesSerial(t *testing.T) {
	n := 3*parallelMin + 13
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) // the split needs two Ps
	run := func(min int) ([]float32, *Adam) {
		defer func(old int) { parallelMin = old }(parallelMin)
		parallelMin = min
		src := rng.New(8, 8)
		p, g := make([]float32, n), make([]float32, n)
		src.FillNormal(p)
		a := NewAdam(n)
		for s := range 3 {
			src.FillNormal(g)
			a.Update(p, g, WarmupLR(int64(s), 1e-3, 1))
		}
		return p, a
	}
	ps, as := run(math.MaxInt)
	pp, ap := run(1)
	if ap.half == nil || as.half != nil {
		t.Fatal("the test did not exercise both paths")
	}
	for i := range ps {
		if math.Float32bits(ps[i]) != math.Float32bits(pp[i]) || math.Float32bits(as.M[i]) != math.Float32bits(ap.M[i]) ||
			math.Float32bits(as.V[i]) != math.Float32bits(ap.V[i]) {
			t.Fatalf("element %d differs between the serial and the two-goroutine loop", i)
		}
	}
}

// The figures for the closing note: one optimizer step over a 4 Mi-element arena
// (scale by 35.7M/4.19M = 8.5 for the cifar10 preset).
func BenchmarkStep(b *testing.B) {
	const n = 1 << 22
	p, g := make([]float32, n), make([]float32, n)
	src := rng.New(1, 2)
	src.FillNormal(p)
	src.FillNormal(g)
	a, e := NewAdam(n), NewEMA(p, DefaultDecay)
	b.Run("clip", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			ClipGlobalNorm(g, 1e9)
		}
	})
	b.Run("adam", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			a.Update(p, g, 1e-9)
		}
	})
	b.Run("ema", func(b *testing.B) {
		b.SetBytes(4 * n)
		for b.Loop() {
			e.Update(p)
		}
	})
}

// TestFMA32 checks fma32 against exact arithmetic (math/big), including a case where rounding
// the float64 sum to float32 would land on a tie and round the wrong way.
func TestFMA32(t *testing.T) {
	exact := func(a, b, c float32) float32 {
		x := new(big.Float).SetPrec(300).SetFloat64(float64(a))
		x.Mul(x, new(big.Float).SetFloat64(float64(b)))
		x.Add(x, new(big.Float).SetFloat64(float64(c)))
		f, _ := x.Float32()
		return f
	}
	// a*b + c = 1 + 2^-23 + 2^-24 - 2^-70: just below the float32 tie between 1+2^-23 and
	// 1+2^-22. The float64 sum rounds onto the tie, and the tie goes to the even 1+2^-22.
	a := float32(1 + 0x1p-23)
	b := float32(0x1p-24 * (1 - 0x1p-23))
	c := float32(1 + 0x1p-23)
	if naive := float32(float64(a)*float64(b) + float64(c)); naive != 1+0x1p-22 {
		t.Fatalf("the hard case is not hard: naive %x", math.Float32bits(naive))
	}
	if got := fma32(a, b, c); got != 1+0x1p-23 {
		t.Errorf("fma32 hard case = %.10g, want 1+2^-23", got)
	}
	if got := fma32(-a, b, -c); got != -(1 + 0x1p-23) {
		t.Errorf("fma32 negated hard case = %.10g, want -(1+2^-23)", got)
	}
	src := rng.New(5, 5)
	for i := range 200_000 {
		a := float32(src.NormFloat64() * math.Pow(2, float64(src.Intn(60)-30)))
		b := float32(src.NormFloat64() * math.Pow(2, float64(src.Intn(60)-30)))
		c := float32(src.NormFloat64() * math.Pow(2, float64(src.Intn(60)-30)))
		if i%4 == 0 {
			c = -float32(float64(a) * float64(b)) // cancellation
		}
		if got, want := fma32(a, b, c), exact(a, b, c); got != want {
			t.Fatalf("fma32(%g, %g, %g) = %g, exact %g", a, b, c, got, want)
		}
	}
}
