package diffusion

import (
	"errors"
	"fmt"
	"math"
)

// Errors returned by this package. Each is wrapped with %w and a description of the offending
// value; test with errors.Is.
var (
	// ErrInvalidSchedule: a ScheduleConfig or beta table that does not define a usable diffusion
	// (unknown kind, T < 2, a beta outside (0, 1), or a derived table that is not finite).
	ErrInvalidSchedule = errors.New("diffusion: invalid schedule")
	// ErrUnknownVariance: a variance name other than "fixedlarge" or "fixedsmall".
	ErrUnknownVariance = errors.New("diffusion: unknown variance")
)

// Schedule kinds accepted by ScheduleConfig.Kind.
const (
	KindLinear = "linear" // betas = linspace(BetaStart, BetaEnd, T) (paper section 4: 1e-4 .. 0.02)
	KindQuad   = "quad"   // betas = linspace(sqrt(BetaStart), sqrt(BetaEnd), T)^2
	KindConst  = "const"  // betas = BetaEnd at every step
	KindCosine = "cosine" // Nichol & Dhariwal 2021, eq. 17; BetaStart and BetaEnd are ignored
)

// Defaults of the paper (section 4) and of the cosine schedule (Nichol & Dhariwal 2021).
const (
	DefaultT             = 1000
	DefaultBetaStart     = 1e-4
	DefaultBetaEnd       = 0.02
	DefaultCosineOffset  = 0.008 // s in eq. 17 of Nichol & Dhariwal
	DefaultCosineMaxBeta = 0.999 // betas of the cosine schedule are clipped to this
)

// ScheduleConfig chooses a variance schedule beta_1..beta_T (paper section 2, "forward process").
// The zero value is not valid; DefaultScheduleConfig gives the paper's.
type ScheduleConfig struct {
	Kind      string  // KindLinear, KindQuad, KindConst or KindCosine
	T         int     // number of diffusion steps, >= 2
	BetaStart float64 // first beta (linear, quad), in (0, 1)
	BetaEnd   float64 // last beta (linear, quad) or every beta (const), in (0, 1)
	// CosineOffset is s of the cosine schedule; 0 means DefaultCosineOffset.
	CosineOffset float64
}

// DefaultScheduleConfig returns the paper's schedule: linear from 1e-4 to 0.02 over T = 1000 steps.
func DefaultScheduleConfig() ScheduleConfig {
	return ScheduleConfig{Kind: KindLinear, T: DefaultT, BetaStart: DefaultBetaStart, BetaEnd: DefaultBetaEnd}
}

// Validate reports whether c defines a schedule; the error wraps ErrInvalidSchedule.
func (c ScheduleConfig) Validate() error {
	if c.T < 2 {
		return fmt.Errorf("%w: T = %d, want >= 2", ErrInvalidSchedule, c.T)
	}
	inUnit := func(name string, v float64) error {
		if !(v > 0 && v < 1) {
			return fmt.Errorf("%w: %s = %v, want 0 < %s < 1", ErrInvalidSchedule, name, v, name)
		}
		return nil
	}
	switch c.Kind {
	case KindLinear, KindQuad:
		if err := inUnit("beta_start", c.BetaStart); err != nil {
			return err
		}
		return inUnit("beta_end", c.BetaEnd)
	case KindConst:
		return inUnit("beta_end", c.BetaEnd)
	case KindCosine:
		if c.CosineOffset < 0 || math.IsNaN(c.CosineOffset) || math.IsInf(c.CosineOffset, 0) {
			return fmt.Errorf("%w: cosine offset s = %v, want s >= 0", ErrInvalidSchedule, c.CosineOffset)
		}
		return nil
	default:
		return fmt.Errorf("%w: kind %q, want %q, %q, %q or %q", ErrInvalidSchedule, c.Kind,
			KindLinear, KindQuad, KindConst, KindCosine)
	}
}

// Betas returns the float64 beta table of c, index t = 0..T-1 holding the paper's beta_{t+1}, as
// the original's get_beta_schedule computes it (numpy.linspace semantics, see linspace).
func (c ScheduleConfig) Betas() ([]float64, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	betas := make([]float64, c.T)
	switch c.Kind {
	case KindLinear:
		linspace(betas, c.BetaStart, c.BetaEnd)
	case KindQuad:
		linspace(betas, math.Sqrt(c.BetaStart), math.Sqrt(c.BetaEnd))
		for i, b := range betas {
			betas[i] = b * b
		}
	case KindConst:
		for i := range betas {
			betas[i] = c.BetaEnd
		}
	case KindCosine:
		s := c.CosineOffset
		if s == 0 {
			s = DefaultCosineOffset
		}
		f := func(i int) float64 {
			v := math.Cos((float64(i)/float64(c.T) + s) / (1 + s) * math.Pi / 2)
			return v * v
		}
		for i := range betas {
			betas[i] = math.Min(1-f(i+1)/f(i), DefaultCosineMaxBeta)
		}
	}
	return betas, nil
}

// linspace fills dst like numpy.linspace(start, stop, len(dst), dtype=float64): dst[i] =
// i*step + start with step = (stop-start)/(n-1), and dst[n-1] = stop exactly.
func linspace(dst []float64, start, stop float64) {
	n := len(dst)
	step := (stop - start) / float64(n-1)
	for i := range dst {
		// The explicit conversion forbids fusing into an FMA (Go spec, "Arithmetic operators"),
		// which would round differently from numpy.
		dst[i] = float64(float64(i)*step) + start
	}
	dst[n-1] = stop
}

// Variance is the fixed reverse-process variance sigma_t^2 (paper section 3.2).
type Variance int

const (
	// FixedLarge: sigma_t^2 = beta_t, except at t = 0 where the original uses the posterior
	// variance at t = 1 ("to get a better decoder log likelihood"); the original's CIFAR-10 runs.
	FixedLarge Variance = iota
	// FixedSmall: sigma_t^2 = beta-tilde_t, the posterior variance (eq. 7), with its log clipped
	// at t = 0 to the value at t = 1.
	FixedSmall
)

// String returns "fixedlarge" or "fixedsmall", the original's names.
func (v Variance) String() string {
	switch v {
	case FixedLarge:
		return "fixedlarge"
	case FixedSmall:
		return "fixedsmall"
	}
	return fmt.Sprintf("Variance(%d)", int(v))
}

// ParseVariance parses "fixedlarge" or "fixedsmall"; other names return an error wrapping
// ErrUnknownVariance.
func ParseVariance(name string) (Variance, error) {
	switch name {
	case "fixedlarge":
		return FixedLarge, nil
	case "fixedsmall":
		return FixedSmall, nil
	}
	return 0, fmt.Errorf("%w %q, want fixedlarge or fixedsmall", ErrUnknownVariance, name)
}

// Tables holds the float64 tables of GaussianDiffusion2.__init__, each of length T; index t
// holds the value for the paper's step t+1 (so index 0 is the first diffusion step).
type Tables struct {
	Betas                       []float64 // beta_t
	Alphas                      []float64 // alpha_t = 1 - beta_t
	AlphasCumprod               []float64 // alphabar_t = prod_{s<=t} alpha_s (sequential product)
	AlphasCumprodPrev           []float64 // alphabar_{t-1}, with 1 at index 0
	SqrtAlphasCumprod           []float64 // sqrt(alphabar_t)
	SqrtOneMinusAlphasCumprod   []float64 // sqrt(1 - alphabar_t)
	LogOneMinusAlphasCumprod    []float64 // log(1 - alphabar_t)
	SqrtRecipAlphasCumprod      []float64 // sqrt(1 / alphabar_t)
	SqrtRecipm1AlphasCumprod    []float64 // sqrt(1 / alphabar_t - 1)
	PosteriorVariance           []float64 // beta-tilde_t (eq. 7), 0 at index 0
	PosteriorLogVarianceClipped []float64 // log beta-tilde_t, index 0 takes index 1's value
	PosteriorMeanCoef1          []float64 // coefficient of x0 in mu-tilde (eq. 7)
	PosteriorMeanCoef2          []float64 // coefficient of x_t in mu-tilde (eq. 7)
	FixedLargeLogVariance       []float64 // log beta_t, index 0 takes log beta-tilde at index 1
}

// Schedule is a diffusion process with T steps: the float64 tables computed once and their
// float32 copies for tensor arithmetic. It is immutable and safe for concurrent use.
type Schedule struct {
	tab Tables

	// float32 copies, read where the original's _extract gathers a float32 table.
	sqrtAB32, sqrt1mAB32, recipAB32, recipm1AB32 []float32
	coef1_32, coef2_32                           []float32
	sigma32                                      [2][]float32 // exp(0.5*log variance), by Variance
}

// NewSchedule computes the schedule of cfg. The error wraps ErrInvalidSchedule.
func NewSchedule(cfg ScheduleConfig) (*Schedule, error) {
	betas, err := cfg.Betas()
	if err != nil {
		return nil, err
	}
	return NewScheduleFromBetas(betas)
}

// NewScheduleFromBetas computes every table from a beta table (len >= 2, each in (0, 1)) exactly as
// GaussianDiffusion2.__init__ does, in float64. betas is copied. The error wraps ErrInvalidSchedule.
func NewScheduleFromBetas(betas []float64) (*Schedule, error) {
	T := len(betas)
	if T < 2 {
		return nil, fmt.Errorf("%w: T = %d, want >= 2", ErrInvalidSchedule, T)
	}
	for i, b := range betas {
		if !(b > 0 && b < 1) {
			return nil, fmt.Errorf("%w: beta[%d] = %v, want 0 < beta < 1", ErrInvalidSchedule, i, b)
		}
	}
	mk := func() []float64 { return make([]float64, T) }
	tb := Tables{
		Betas: append([]float64(nil), betas...), Alphas: mk(), AlphasCumprod: mk(), AlphasCumprodPrev: mk(),
		SqrtAlphasCumprod: mk(), SqrtOneMinusAlphasCumprod: mk(), LogOneMinusAlphasCumprod: mk(),
		SqrtRecipAlphasCumprod: mk(), SqrtRecipm1AlphasCumprod: mk(), PosteriorVariance: mk(),
		PosteriorLogVarianceClipped: mk(), PosteriorMeanCoef1: mk(), PosteriorMeanCoef2: mk(),
		FixedLargeLogVariance: mk(),
	}
	prod := 1.0
	for t, b := range betas {
		a := 1 - b
		tb.Alphas[t] = a
		tb.AlphasCumprodPrev[t] = prod
		prod *= a
		tb.AlphasCumprod[t] = prod
	}
	for t := range T {
		b, a, ab, abPrev := betas[t], tb.Alphas[t], tb.AlphasCumprod[t], tb.AlphasCumprodPrev[t]
		tb.SqrtAlphasCumprod[t] = math.Sqrt(ab)
		tb.SqrtOneMinusAlphasCumprod[t] = math.Sqrt(1 - ab)
		tb.LogOneMinusAlphasCumprod[t] = math.Log(1 - ab)
		tb.SqrtRecipAlphasCumprod[t] = math.Sqrt(1 / ab)
		tb.SqrtRecipm1AlphasCumprod[t] = math.Sqrt(1/ab - 1)
		tb.PosteriorVariance[t] = b * (1 - abPrev) / (1 - ab)
		tb.PosteriorMeanCoef1[t] = b * math.Sqrt(abPrev) / (1 - ab)
		tb.PosteriorMeanCoef2[t] = (1 - abPrev) * math.Sqrt(a) / (1 - ab)
	}
	for t := range T {
		src := t
		if t == 0 {
			src = 1 // beta-tilde_0 = 0: the original takes index 1's value
		}
		tb.PosteriorLogVarianceClipped[t] = math.Log(tb.PosteriorVariance[src])
		if t == 0 {
			tb.FixedLargeLogVariance[t] = math.Log(tb.PosteriorVariance[1])
		} else {
			tb.FixedLargeLogVariance[t] = math.Log(betas[t])
		}
	}
	if err := tb.check(); err != nil {
		return nil, err
	}
	s := &Schedule{tab: tb}
	s.sqrtAB32 = to32(tb.SqrtAlphasCumprod)
	s.sqrt1mAB32 = to32(tb.SqrtOneMinusAlphasCumprod)
	s.recipAB32 = to32(tb.SqrtRecipAlphasCumprod)
	s.recipm1AB32 = to32(tb.SqrtRecipm1AlphasCumprod)
	s.coef1_32 = to32(tb.PosteriorMeanCoef1)
	s.coef2_32 = to32(tb.PosteriorMeanCoef2)
	for _, v := range []Variance{FixedLarge, FixedSmall} {
		sg := make([]float32, T)
		for t := range T {
			sg[t] = float32(math.Exp(0.5 * s.logVariance(v, t)))
		}
		s.sigma32[v] = sg
	}
	return s, nil
}

// check rejects tables with a non-finite entry or 1 - alphabar_t <= 0 (a schedule so short or
// so small that alphabar rounds to 1, or so long that it underflows to 0).
func (tb *Tables) check() error {
	for t, ab := range tb.AlphasCumprod {
		if !(ab > 0 && 1-ab > 0) {
			return fmt.Errorf("%w: alphas_cumprod[%d] = %v, want 0 < alphabar < 1", ErrInvalidSchedule, t, ab)
		}
	}
	for name, col := range tb.columns() {
		for t, v := range col {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: %s[%d] = %v", ErrInvalidSchedule, name, t, v)
			}
		}
	}
	return nil
}

// columns returns the tables by their names in the original code.
func (tb *Tables) columns() map[string][]float64 {
	return map[string][]float64{
		"betas": tb.Betas, "alphas": tb.Alphas, "alphas_cumprod": tb.AlphasCumprod,
		"alphas_cumprod_prev": tb.AlphasCumprodPrev, "sqrt_alphas_cumprod": tb.SqrtAlphasCumprod,
		"sqrt_one_minus_alphas_cumprod":  tb.SqrtOneMinusAlphasCumprod,
		"log_one_minus_alphas_cumprod":   tb.LogOneMinusAlphasCumprod,
		"sqrt_recip_alphas_cumprod":      tb.SqrtRecipAlphasCumprod,
		"sqrt_recipm1_alphas_cumprod":    tb.SqrtRecipm1AlphasCumprod,
		"posterior_variance":             tb.PosteriorVariance,
		"posterior_log_variance_clipped": tb.PosteriorLogVarianceClipped,
		"posterior_mean_coef1":           tb.PosteriorMeanCoef1,
		"posterior_mean_coef2":           tb.PosteriorMeanCoef2,
		"fixedlarge_log_variance":        tb.FixedLargeLogVariance,
	}
}

func to32(x []float64) []float32 {
	y := make([]float32, len(x))
	for i, v := range x {
		y[i] = float32(v)
	}
	return y
}

// T returns the number of diffusion steps; valid timesteps are 0..T-1.
func (s *Schedule) T() int { return len(s.tab.Betas) }

// Tables returns a copy of the float64 tables.
func (s *Schedule) Tables() Tables {
	c := func(x []float64) []float64 { return append([]float64(nil), x...) }
	tb := s.tab
	return Tables{
		Betas: c(tb.Betas), Alphas: c(tb.Alphas), AlphasCumprod: c(tb.AlphasCumprod),
		AlphasCumprodPrev: c(tb.AlphasCumprodPrev), SqrtAlphasCumprod: c(tb.SqrtAlphasCumprod),
		SqrtOneMinusAlphasCumprod:   c(tb.SqrtOneMinusAlphasCumprod),
		LogOneMinusAlphasCumprod:    c(tb.LogOneMinusAlphasCumprod),
		SqrtRecipAlphasCumprod:      c(tb.SqrtRecipAlphasCumprod),
		SqrtRecipm1AlphasCumprod:    c(tb.SqrtRecipm1AlphasCumprod),
		PosteriorVariance:           c(tb.PosteriorVariance),
		PosteriorLogVarianceClipped: c(tb.PosteriorLogVarianceClipped),
		PosteriorMeanCoef1:          c(tb.PosteriorMeanCoef1),
		PosteriorMeanCoef2:          c(tb.PosteriorMeanCoef2),
		FixedLargeLogVariance:       c(tb.FixedLargeLogVariance),
	}
}

// ModelVariance returns sigma_t^2 of the reverse process p(x_{t-1} | x_t) for v at timestep t
// (p_mean_variance's model_variance: beta_t for FixedLarge, beta-tilde_t for FixedSmall; note
// that at t = 0 FixedLarge's variance is beta_0 while its log variance is log beta-tilde_1, as in
// the original, where only the log variance is used). It panics if t is outside [0, T).
func (s *Schedule) ModelVariance(v Variance, t int) float64 {
	s.checkT(t)
	switch v {
	case FixedLarge:
		return s.tab.Betas[t]
	case FixedSmall:
		return s.tab.PosteriorVariance[t]
	}
	panic(fmt.Sprintf("diffusion: unknown Variance %d", int(v)))
}

// ModelLogVariance returns log sigma_t^2 for v at timestep t (p_mean_variance's
// model_log_variance, the one used for sampling and in the bound). It panics if t is outside
// [0, T) or v is unknown.
func (s *Schedule) ModelLogVariance(v Variance, t int) float64 {
	s.checkT(t)
	return s.logVariance(v, t)
}

func (s *Schedule) logVariance(v Variance, t int) float64 {
	switch v {
	case FixedLarge:
		return s.tab.FixedLargeLogVariance[t]
	case FixedSmall:
		return s.tab.PosteriorLogVarianceClipped[t]
	}
	panic(fmt.Sprintf("diffusion: unknown Variance %d", int(v)))
}

func (s *Schedule) checkT(t int) {
	if t < 0 || t >= len(s.tab.Betas) {
		panic(fmt.Sprintf("diffusion: timestep %d outside [0, %d)", t, len(s.tab.Betas)))
	}
}
