package optim

import (
	"bytes"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"ddpm/internal/rng"
	"ddpm/internal/safetensors"
)

// torchTol: Adam, clipping and the norm against torch.optim.Adam and clip_grad_norm_ in float32.
// Both sides round element-wise float32 arithmetic the same way except the clip coefficient
// (ours float64 -> float32, torch's a float32 division) and torch's float32 norm, so they agree
// to a few float32 ulps.
const torchTol = 1e-6

// TestAdamMatchesTorch runs clip + Adam for 12 steps on a 1,031-element vector, with warmup
// (the first step has lr 0) and gradient scales that alternate between clipped and not, and
// compares parameters, moments, clipped gradients and norms with PyTorch after every step.
func TestAdamMatchesTorch(t *testing.T) {
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		t.Fatalf("%s with torch and numpy is required for the PyTorch parity test (Debian python3-torch "+
			"python3-numpy, installed by `scripts/setup.sh test`): %v\n%s", py, err, out)
	}
	_, here, _, _ := runtime.Caller(0)
	parity := filepath.Join(filepath.Dir(here), "..", "..", "shared", "anchors", "pytorch")
	if _, err := os.Stat(filepath.Join(parity, "parity.py")); err != nil {
		t.Fatalf("the anchors' parity.py (its safetensors helpers) is required at %s: %v", parity, err)
	}

	const n, steps, maxNorm = 1031, 12, 1.0
	src := rng.New(2020, 0)
	p0 := make([]float32, n)
	for i := range p0 {
		// magnitudes in [0.5, 1.5] with either sign, so relative comparison is meaningful
		p0[i] = float32((0.5 + src.Float64()) * float64(1-2*(i%2)))
	}
	g := make([]float32, steps*n)
	lr := make([]float64, steps)
	scales := []float64{0.1, 0.001, 0.05, 0.002, 1, 0.01} // norm ~ 32*scale: clipped, not, clipped, ...
	for s := range steps {
		row := g[s*n : (s+1)*n]
		src.FillNormal(row)
		Scale(row, scales[s%len(scales)])
		lr[s] = WarmupLR(int64(s), 1e-2, 4)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.safetensors"), filepath.Join(dir, "out.safetensors")
	err := safetensors.Write(in, []safetensors.Tensor{
		safetensors.F32("p0", []int{n}, p0),
		safetensors.F32("g", []int{steps, n}, g),
		safetensors.F64("lr", []int{steps}, lr),
		safetensors.F64("hyper", []int{4}, []float64{DefaultBeta1, DefaultBeta2, DefaultEps, maxNorm}),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "adam_torch.py"), parity, in, out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("adam_torch.py: %v\n%s", err, stderr.String())
	}
	ts, _, err := safetensors.Read(out)
	if err != nil {
		t.Fatal(err)
	}
	ref := map[string][]float64{}
	for _, x := range ts {
		if ref[x.Name], err = x.Float64s(); err != nil {
			t.Fatal(err)
		}
	}

	p := append([]float32(nil), p0...)
	a := NewAdam(n)
	var worst float64
	clipped := 0
	for s := range steps {
		grad := append([]float32(nil), g[s*n:(s+1)*n]...)
		norm := ClipGlobalNorm(grad, maxNorm)
		if norm > maxNorm {
			clipped++
		}
		if want := ref["norm"][s]; !relClose(norm, want, torchTol) {
			t.Errorf("step %d: norm %.9g, torch %.9g", s, norm, want)
		}
		a.Update(p, grad, WarmupLR(a.Step, 1e-2, 4))
		for _, c := range []struct {
			name string
			got  []float32
		}{{"g_clipped", grad}, {"p", p}, {"m", a.M}, {"v", a.V}} {
			want := ref[c.name][s*n : (s+1)*n]
			// m, v and g cross zero: compare each element relative to the arena's largest value.
			scale := 0.0
			for _, w := range want {
				scale = math.Max(scale, math.Abs(w))
			}
			for i, x := range c.got {
				d := math.Abs(float64(x) - want[i])
				if c.name == "p" {
					d /= math.Abs(want[i])
				} else {
					d /= scale
				}
				worst = math.Max(worst, d)
				if d > torchTol {
					t.Fatalf("step %d: %s[%d] = %.9g, torch %.9g (relative difference %.2g)", s, c.name, i, x, want[i], d)
				}
			}
		}
	}
	// Fed torch's own clipped gradients, Adam's float32 arithmetic is PyTorch's, rounding for
	// rounding: the parameters and moments agree bit for bit.
	p2 := append([]float32(nil), p0...)
	a2 := NewAdam(n)
	grad := make([]float32, n)
	mismatches := 0
	for s := range steps {
		for i := range grad {
			grad[i] = float32(ref["g_clipped"][s*n+i])
		}
		a2.Update(p2, grad, WarmupLR(a2.Step, 1e-2, 4))
		for i := range p2 {
			if float64(p2[i]) != ref["p"][s*n+i] || float64(a2.M[i]) != ref["m"][s*n+i] || float64(a2.V[i]) != ref["v"][s*n+i] {
				mismatches++
			}
		}
	}
	if mismatches != 0 {
		t.Errorf("given torch's clipped gradients, %d of %d (step, element) states differ from torch's bits", mismatches, steps*n)
	}
	if clipped == 0 || clipped == steps {
		t.Errorf("%d of %d steps clipped: the test should exercise both branches", clipped, steps)
	}
	if p0[0] == p[0] {
		t.Errorf("parameters never moved")
	}
	t.Logf("largest relative difference from PyTorch over %d steps: %.3g (%d steps clipped)", steps, worst, clipped)
}
