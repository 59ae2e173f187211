package unet

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestPresetParamCounts(t *testing.T) {
	want := map[string]int{
		"cifar10":     35_746_307, // DDPMUNet in anchors/pytorch/unet_bench.py; the paper's 35.7M
		"small":       828_387,    // anchors/REFERENCE_MODEL.md
		"lsun256":     113_673_219,
		"celebahq256": 113_673_219,
		"tiny":        208_305,
	}
	for _, name := range PresetNames() {
		cfg, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := NumParams(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got != want[name] {
			t.Errorf("%s: %d parameters, want %d", name, got, want[name])
		}
	}
	if _, err := Preset("cifar100"); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown preset: err = %v, want ErrConfig", err)
	}
}

func TestValidate(t *testing.T) {
	base, _ := Preset("small")
	cases := []struct {
		name string
		mod  func(*Config)
	}{
		{"groups", func(c *Config) { c.Groups = 5 }},
		{"resolution", func(c *Config) { c.Resolution = 30 }},
		{"compact blocks", func(c *Config) { c.NumResBlocks = 2 }},
		{"dropout", func(c *Config) { c.Dropout = 1 }},
		{"attention", func(c *Config) { c.AttnResolutions = []int{12} }},
		{"channels", func(c *Config) { c.OutCh = 0 }},
		{"layout", func(c *Config) { c.Layout = "resnet" }},
		{"eps", func(c *Config) { c.GNEps = 0 }},
	}
	for _, tc := range cases {
		c := base.clone()
		tc.mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: Validate() = %v, want ErrConfig", tc.name, err)
		}
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: New() = %v, want ErrConfig", tc.name, err)
		}
	}
	for _, name := range PresetNames() {
		c, _ := Preset(name)
		if err := c.Validate(); err != nil {
			t.Errorf("preset %s: %v", name, err)
		}
	}
}

// TestInit checks the original's initialization: limits of fan-average uniform scaling,
// near-zero layers, zero biases, unit GroupNorm gains, determinism in the seed.
func TestInit(t *testing.T) {
	cfg, _ := Preset("small")
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	p := m.Params()
	byName := map[string][]float32{}
	for _, ti := range m.Tensors() {
		byName[ti.Name] = p[ti.Offset : ti.Offset+ti.Len]
	}
	maxAbs := func(s []float32) float64 {
		var mx float64
		for _, v := range s {
			mx = math.Max(mx, math.Abs(float64(v)))
		}
		return mx
	}
	// d1_res.conv1: 3x3, 32 -> 64: a = sqrt(3 / ((288+576)/2)) = 0.0833.
	lim := math.Sqrt(3 / ((288.0 + 576.0) / 2))
	if mx := maxAbs(byName["d1_res.conv1.weight"]); mx > lim || mx < 0.95*lim {
		t.Errorf("d1_res.conv1.weight: max |w| = %g, want just under %g", mx, lim)
	}
	for _, name := range []string{"d1_res.conv2.weight", "d1_attn.proj.weight", "conv_out.weight"} {
		if mx := maxAbs(byName[name]); mx > 1e-5 || mx == 0 {
			t.Errorf("%s: max |w| = %g, want about 1e-6 (scale 1e-10)", name, mx)
		}
	}
	if mx := maxAbs(byName["d1_res.conv1.bias"]); mx != 0 {
		t.Errorf("bias not zero: %g", mx)
	}
	for _, v := range byName["norm_out.weight"] {
		if v != 1 {
			t.Fatalf("norm_out.weight = %g, want 1", v)
		}
	}
	m2, _ := New(cfg)
	m2.Init(7)
	for i, v := range m2.Params() {
		if v != p[i] {
			t.Fatalf("Init(7) differs at %d", i)
		}
	}
	m2.Init(8)
	if m2.Params()[0] == p[0] {
		t.Fatal("Init(8) equals Init(7)")
	}
}

// gradConfigs are tiny networks of both layouts with every feature on: channel changes (1x1
// skips), attention, two levels, dropout.
func gradConfigs() map[string]Config {
	return map[string]Config{
		"ddpm": {Layout: LayoutDDPM, InCh: 2, OutCh: 2, Resolution: 8, Ch: 8, ChMult: []int{1, 2},
			NumResBlocks: 1, AttnResolutions: []int{4}, Dropout: 0.3, Groups: 4, GNEps: 1e-5},
		"compact": {Layout: LayoutCompact, InCh: 1, OutCh: 1, Resolution: 8, Ch: 8, ChMult: []int{1, 2, 1},
			NumResBlocks: 1, AttnResolutions: []int{8, 4}, Dropout: 0.3, Groups: 2, GNEps: 1e-6},
	}
}

// TestGradient checks every parameter tensor's gradient (first, middle and last element) and
// the loss against central finite differences, in float64. Parameters are randomized after
// Init so that the near-zero layers pass signal. With step 1e-5 the truncation error is ~1e-10
// and rounding ~1e-11 relative, so 1e-6 relative (floor 1e-6 absolute) catches any real error.
func TestGradient(t *testing.T) {
	for name, cfg := range gradConfigs() {
		t.Run(name, func(t *testing.T) {
			m, err := NewFloat64(cfg)
			if err != nil {
				t.Fatal(err)
			}
			m.Init(1)
			r := rand.New(rand.NewPCG(3, 4))
			for i := range m.Params() {
				m.Params()[i] += 0.2 * r.NormFloat64()
			}
			const b = 2
			x := make([]float64, b*cfg.InCh*64)
			rr := make([]float64, b*cfg.OutCh*64)
			for i := range x {
				x[i] = r.NormFloat64()
			}
			for i := range rr {
				rr[i] = r.NormFloat64()
			}
			ts := []int32{3, 911}
			key := &DropoutKey{Seed: 5, Positions: []uint64{10, 11}}
			loss := func() float64 {
				y := m.Forward(x, ts, b, key)
				var s float64
				for i, v := range y {
					s += v * rr[i]
				}
				return s
			}
			loss()
			m.ZeroGrads()
			m.Backward(rr)
			g := append([]float64(nil), m.Grads()...)
			const h, tol = 1e-5, 1e-6
			checked := 0
			for _, ti := range m.Tensors() {
				for _, i := range []int{ti.Offset, ti.Offset + ti.Len/2, ti.Offset + ti.Len - 1} {
					old := m.Params()[i]
					m.Params()[i] = old + h
					lp := loss()
					m.Params()[i] = old - h
					lm := loss()
					m.Params()[i] = old
					num := (lp - lm) / (2 * h)
					if math.Abs(num-g[i]) > tol*math.Max(1, math.Abs(num)) {
						t.Errorf("%s[%d]: analytic %.10g, numeric %.10g", ti.Name, i-ti.Offset, g[i], num)
					}
					checked++
				}
			}
			if checked < 3*20 {
				t.Fatalf("only %d checks", checked)
			}
		})
	}
}

// TestBatchIndependence: a sample's output does not depend on the other samples of its batch
// (no cross-sample leakage in GroupNorm, attention or the batched GEMMs), dropout included.
func TestBatchIndependence(t *testing.T) {
	cfg := gradConfigs()["ddpm"]
	m, _ := New(cfg)
	m.Init(2)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range m.Params() {
		m.Params()[i] += float32(0.1 * r.NormFloat64())
	}
	n := cfg.InCh * 64
	x := make([]float32, 3*n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	all := append([]float32(nil), m.Forward(x, []int32{5, 6, 7}, 3, &DropoutKey{Seed: 9, Positions: []uint64{100, 101, 102}})...)
	one := m.Forward(x[n:2*n], []int32{6}, 1, &DropoutKey{Seed: 9, Positions: []uint64{101}})
	on := cfg.OutCh * 64
	for i, v := range one {
		if d := math.Abs(float64(v - all[on+i])); d > 1e-5 {
			t.Fatalf("sample 1 alone differs at %d: %g vs %g", i, v, all[on+i])
		}
	}
}
