package diffusion

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"testing"
)

// Named tolerances (issue 2): float64 tables against the numpy reference, float32 paths, and the
// float32 timestep embedding against the float64 reference values.
const (
	tolTable64  = 1e-12 // relative, float64 schedule tables
	tolPath32   = 1e-6  // relative, float32 tensor paths
	tolEmbed    = 1e-4  // absolute, float32 embedding vs float64 reference (the JSON's note)
	tolFormula  = 1e-13 // relative, float64 closed-form terms (KL, log-likelihood)
	tolSumTable = 1e-12 // relative, sums over the full float64 tables
)

// reference is testdata/ddpm_reference_values.json, a copy of shared/reference's file, written by
// testdata/ddpm_reference_values.py (numpy float64, following hojonathanho/diffusion).
type reference struct {
	Schedule struct {
		Type      string  `json:"type"`
		BetaStart float64 `json:"beta_start"`
		BetaEnd   float64 `json:"beta_end"`
		T         int     `json:"T"`
		Indices   []int   `json:"indices"`
	} `json:"schedule"`
	AtIndices     map[string][]float64 `json:"at_indices"`
	FullArraySums map[string]float64   `json:"full_array_sums"`
	TimestepEmbed struct {
		Dim     int                  `json:"dim"`
		T       []int32              `json:"t"`
		Float64 map[string][]float64 `json:"float64"`
		F32Diff map[string]float64   `json:"float32_as_original_tf_max_abs_diff_vs_float64"`
	} `json:"timestep_embedding"`
	DiscretizedGaussian struct {
		X         []float64 `json:"x"`
		Means     []float64 `json:"means"`
		LogScales []float64 `json:"log_scales"`
		LogProbs  []float64 `json:"log_probs_nats"`
		NLLBits   float64   `json:"decoder_nll_bits_meanflat"`
	} `json:"discretized_gaussian_log_likelihood"`
	NormalKL struct {
		Mean1, Logvar1, Mean2, Logvar2 []float64
		KL                             []float64 `json:"kl_nats"`
		MeanflatBits                   float64   `json:"meanflat_bits"`
	} `json:"normal_kl"`
	PriorKL struct {
		X0       []float64 `json:"x0"`
		KL       []float64 `json:"kl_nats"`
		PriorBPD float64   `json:"prior_bpd_meanflat_bits"`
	} `json:"prior_kl"`
	QPosteriorMean struct {
		X0  []float64            `json:"x0"`
		Xt  []float64            `json:"x_t"`
		ByT map[string][]float64 `json:"by_t"`
	} `json:"q_posterior_mean"`
}

func loadReference(t *testing.T) *reference {
	t.Helper()
	b, err := os.ReadFile("testdata/ddpm_reference_values.json")
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func relErr(got, want float64) float64 {
	if got == want {
		return 0
	}
	return math.Abs(got-want) / math.Max(math.Abs(want), math.SmallestNonzeroFloat64)
}

// TestTimestepEmbeddingReference checks get_timestep_embedding (diffusion_tf/nn.py) at
// t = 0, 1, 500, 999 with dim 32 against the float64 reference, within tolEmbed, and that the
// deviation is no larger than the original float32 TF computation's own (plus a float32 ulp).
func TestTimestepEmbeddingReference(t *testing.T) {
	ref := loadReference(t)
	e := ref.TimestepEmbed
	dim := e.Dim
	dst := make([]float32, len(e.T)*dim)
	TimestepEmbedding(dst, e.T, dim)
	for b, ts := range e.T {
		key := strconv.Itoa(int(ts))
		want := e.Float64[key]
		if len(want) != dim {
			t.Fatalf("reference row %s has %d values, want %d", key, len(want), dim)
		}
		maxDiff := 0.0
		for j := range dim {
			d := math.Abs(float64(dst[b*dim+j]) - want[j])
			maxDiff = math.Max(maxDiff, d)
			if d > tolEmbed {
				t.Errorf("t=%d j=%d: got %v, want %v (|diff| %.3g > %g)", ts, j, dst[b*dim+j], want[j], d, tolEmbed)
			}
		}
		// The original float32 computation's own deviation, with one float32 ulp of slack at 1.0.
		if limit := e.F32Diff[key] + 1.2e-7; maxDiff > limit {
			t.Errorf("t=%d: max |diff| %.3g exceeds the original float32 code's %.3g", ts, maxDiff, e.F32Diff[key])
		}
	}
	// t = 0: sin block exactly 0, cos block exactly 1.
	for j := range dim / 2 {
		if dst[j] != 0 || dst[dim/2+j] != 1 {
			t.Fatalf("t=0: got sin %v cos %v at j=%d, want 0 and 1", dst[j], dst[dim/2+j], j)
		}
	}
}

func TestTimestepEmbeddingOddDimPadsZero(t *testing.T) {
	dst := make([]float32, 2*7)
	for i := range dst {
		dst[i] = 42
	}
	TimestepEmbedding(dst, []int32{3, 999}, 7)
	even := make([]float32, 2*6)
	TimestepEmbedding(even, []int32{3, 999}, 6)
	for b := range 2 {
		for j := range 6 {
			if dst[b*7+j] != even[b*6+j] {
				t.Fatalf("row %d col %d: odd-dim %v != even-dim %v", b, j, dst[b*7+j], even[b*6+j])
			}
		}
		if dst[b*7+6] != 0 {
			t.Fatalf("row %d: pad = %v, want 0", b, dst[b*7+6])
		}
	}
}

func mustSchedule(t testing.TB, cfg ScheduleConfig) *Schedule {
	t.Helper()
	s, err := NewSchedule(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScheduleTablesReference: every float64 table of GaussianDiffusion2.__init__ for the paper's
// linear schedule (section 4) at t = 0, 1, 499, 998, 999 and summed over all t, to tolTable64.
func TestScheduleTablesReference(t *testing.T) {
	ref := loadReference(t)
	rs := ref.Schedule
	if rs.Type != KindLinear {
		t.Fatalf("reference schedule %q", rs.Type)
	}
	s := mustSchedule(t, ScheduleConfig{Kind: KindLinear, T: rs.T, BetaStart: rs.BetaStart, BetaEnd: rs.BetaEnd})
	if s.T() != rs.T {
		t.Fatalf("T() = %d, want %d", s.T(), rs.T)
	}
	tb := s.Tables()
	cols := tb.columns()
	if len(ref.AtIndices) != len(cols)-1 { // the reference has no "alphas" entry
		t.Errorf("reference has %d tables, we have %d (+alphas)", len(ref.AtIndices), len(cols)-1)
	}
	for name, want := range ref.AtIndices {
		col, ok := cols[name]
		if !ok {
			t.Errorf("no table %q", name)
			continue
		}
		for k, idx := range rs.Indices {
			if e := relErr(col[idx], want[k]); e > tolTable64 {
				t.Errorf("%s[%d] = %.17g, want %.17g (rel err %.3g > %g)", name, idx, col[idx], want[k], e, tolTable64)
			}
		}
		sum := 0.0
		for _, v := range col {
			sum += v
		}
		if e := relErr(sum, ref.FullArraySums[name]); e > tolSumTable {
			t.Errorf("sum(%s) = %.17g, want %.17g (rel err %.3g)", name, sum, ref.FullArraySums[name], e)
		}
	}
	// numpy.linspace sets the endpoint exactly.
	if tb.Betas[rs.T-1] != rs.BetaEnd || tb.Betas[0] != rs.BetaStart {
		t.Errorf("betas[0], betas[T-1] = %v, %v, want exactly %v, %v", tb.Betas[0], tb.Betas[rs.T-1], rs.BetaStart, rs.BetaEnd)
	}
}

// TestDiscretizedGaussianReference: the L_0 decoder (eq. 13) with the original's tanh CDF, each
// branch (left edge, interior, right edge), and its meanflat in bits.
func TestDiscretizedGaussianReference(t *testing.T) {
	r := loadReference(t).DiscretizedGaussian
	sum := 0.0
	for i, x := range r.X {
		got := DiscretizedGaussianLogLikelihood(x, r.Means[i], r.LogScales[i])
		if e := relErr(got, r.LogProbs[i]); e > tolFormula {
			t.Errorf("x=%v mean=%v logscale=%v: got %.17g, want %.17g (rel err %.3g)", x, r.Means[i], r.LogScales[i], got, r.LogProbs[i], e)
		}
		sum += got
	}
	if got := -sum / float64(len(r.X)) / math.Ln2; relErr(got, r.NLLBits) > tolFormula {
		t.Errorf("decoder NLL bits = %.17g, want %.17g", got, r.NLLBits)
	}
}

func TestNormalKLReference(t *testing.T) {
	r := loadReference(t).NormalKL
	sum := 0.0
	for i := range r.Mean1 {
		got := NormalKL(r.Mean1[i], r.Logvar1[i], r.Mean2[i], r.Logvar2[i])
		if e := relErr(got, r.KL[i]); e > tolFormula && math.Abs(got-r.KL[i]) > 1e-16 {
			t.Errorf("case %d: got %.17g, want %.17g (rel err %.3g)", i, got, r.KL[i], e)
		}
		sum += got
	}
	if got := sum / float64(len(r.Mean1)) / math.Ln2; relErr(got, r.MeanflatBits) > tolFormula {
		t.Errorf("meanflat bits = %.17g, want %.17g", got, r.MeanflatBits)
	}
}

// TestPriorBPDReference: L_T of eq. 5 (_prior_bpd) for x0 = [-1, 0, 0.5, 1] as one sample.
func TestPriorBPDReference(t *testing.T) {
	ref := loadReference(t)
	r := ref.PriorKL
	s := mustSchedule(t, DefaultScheduleConfig())
	tb := s.Tables()
	x0 := make([]float32, len(r.X0))
	for i, v := range r.X0 {
		x0[i] = float32(v) // exact: the values are dyadic
		got := NormalKL(tb.SqrtAlphasCumprod[999]*v, tb.LogOneMinusAlphasCumprod[999], 0, 0)
		// x0 = 0 leaves only -1 - lv + exp(lv) ~ lv^2/2, a cancellation of 1e-10 out of 1.
		tol := tolTable64
		if v == 0 {
			tol = 1e-6
		}
		if e := relErr(got, r.KL[i]); e > tol {
			t.Errorf("x0=%v: KL %.17g, want %.17g (rel err %.3g > %g)", v, got, r.KL[i], e, tol)
		}
	}
	dst := make([]float64, 1)
	s.PriorBPD(dst, x0, 1)
	if e := relErr(dst[0], r.PriorBPD); e > tolTable64 {
		t.Errorf("PriorBPD = %.17g, want %.17g (rel err %.3g)", dst[0], r.PriorBPD, e)
	}
}

// TestQPosteriorMeanReference: mu-tilde of eq. 7 through the float32 path, to tolPath32.
func TestQPosteriorMeanReference(t *testing.T) {
	ref := loadReference(t)
	r := ref.QPosteriorMean
	s := mustSchedule(t, DefaultScheduleConfig())
	d := len(r.X0)
	for key, want := range r.ByT {
		ts, _ := strconv.Atoi(key)
		x0 := make([]float32, d)
		xt := make([]float32, d)
		for i := range d {
			x0[i], xt[i] = float32(r.X0[i]), float32(r.Xt[i])
		}
		got := make([]float32, d)
		s.QPosteriorMean(got, x0, xt, []int32{int32(ts)}, 1)
		for i := range d {
			if e := relErr(float64(got[i]), want[i]); e > tolPath32 {
				t.Errorf("t=%d i=%d: got %.9g, want %.17g (rel err %.3g > %g)", ts, i, got[i], want[i], e, tolPath32)
			}
		}
	}
}
