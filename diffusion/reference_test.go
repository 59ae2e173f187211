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
