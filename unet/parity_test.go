package unet

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"ddpm/internal/safetensors"
	"ddpm/internal/testutil"
	"ddpm/nn"
)

// parityCmd runs the PyTorch oracle (anchors/pytorch/parity.py) with args; see
// testutil.ParityCommand.
func parityCmd(t *testing.T, args ...string) *exec.Cmd { return testutil.ParityCommand(t, args...) }

// oracleArgs gives parity.py the model for cfg: small is SmallUNet; the ddpm layout is
// DDPMUNet (32 groups, eps 1e-6, 3 channels) with the given shape.
func oracleArgs(cfg Config) []string {
	if cfg.Layout == LayoutCompact {
		return []string{"--model", "small"}
	}
	args := []string{"--model", "ddpm", "--ch", strconv.Itoa(cfg.Ch), "--num-res-blocks", strconv.Itoa(cfg.NumResBlocks),
		"--resolution", strconv.Itoa(cfg.Resolution), "--ch-mult"}
	for _, m := range cfg.ChMult {
		args = append(args, strconv.Itoa(m))
	}
	args = append(args, "--attn")
	for _, r := range cfg.AttnResolutions {
		args = append(args, strconv.Itoa(r))
	}
	return args
}

// reducedCIFAR10 is the cifar10 preset at a quarter of the width: the same topology, levels,
// attention placement, 32 groups and eps 1e-6, at 1/16 of the compute.
func reducedCIFAR10() Config {
	c, _ := Preset("cifar10")
	c.Ch = 32
	return c
}

// TestParamNamesMatchPyTorch: names, shapes and order equal the reference state_dict.
func TestParamNamesMatchPyTorch(t *testing.T) {
	for _, name := range []string{"small", "cifar10"} {
		cfg, _ := Preset(name)
		n, err := build[float32](cfg)
		if err != nil {
			t.Fatal(err)
		}
		out, err := parityCmd(t, append(oracleArgs(cfg), "--list-names")...).Output()
		if err != nil {
			t.Fatalf("%s: parity.py --list-names: %v", name, err)
		}
		var want []string
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			want = append(want, sc.Text())
		}
		var got []string
		for _, ti := range n.arena.Infos() {
			s := make([]string, len(ti.Shape))
			for i, d := range ti.Shape {
				s[i] = strconv.Itoa(d)
			}
			got = append(got, fmt.Sprintf("%s [%s]", ti.Name, strings.Join(s, ", ")))
		}
		if !slices.Equal(got, want) {
			for i := range min(len(got), len(want)) {
				if got[i] != want[i] {
					t.Fatalf("%s: tensor %d is %q, PyTorch has %q", name, i, got[i], want[i])
				}
			}
			t.Fatalf("%s: %d tensors, PyTorch has %d", name, len(got), len(want))
		}
	}
}

// relErr is max|a-b| / max(max|b|, floor): the error relative to the tensor's scale, with a
// floor for tensors whose exact value is zero.
func relErr[T nn.Float](a []T, b []float64, floor float64) float64 {
	var d, s float64
	for i := range b {
		d = math.Max(d, math.Abs(float64(a[i])-b[i]))
		s = math.Max(s, math.Abs(b[i]))
	}
	return d / math.Max(s, floor)
}

func maxAbs(v []float64) float64 {
	var m float64
	for _, x := range v {
		m = math.Max(m, math.Abs(x))
	}
	return m
}

// runParity writes net's weights and a batch, runs the oracle with --grad, and compares
// eps_theta, L_simple and every parameter gradient.
func runParity[T nn.Float](t *testing.T, net *Net[T], fwdTol, gradTol float64) {
	cfg := net.cfg
	r := rand.New(rand.NewPCG(11, 12))
	// Perturb the initialization so the near-zero layers (conv2, proj, conv_out) carry signal
	// and every gradient is exercised.
	for i := range net.Params() {
		net.Params()[i] += T(0.02 * r.NormFloat64())
	}
	const b = 2
	d := cfg.InCh * cfg.Resolution * cfg.Resolution
	x, eps := make([]T, b*d), make([]T, b*d)
	for i := range x {
		x[i], eps[i] = T(r.NormFloat64()), T(r.NormFloat64())
	}
	ts := []int32{0, 999}
	dir := t.TempDir()
	wpath, ipath, opath := filepath.Join(dir, "w.safetensors"), filepath.Join(dir, "in.safetensors"), filepath.Join(dir, "out.safetensors")
	if err := WriteSafetensors(wpath, net.Tensors(), net.Params(), nil); err != nil {
		t.Fatal(err)
	}
	shape := []int{b, cfg.InCh, cfg.Resolution, cfg.Resolution}
	in := []safetensors.Tensor{safetensors.I64("t", []int{b}, []int64{0, 999})}
	switch xv := any(x).(type) {
	case []float32:
		in = append(in, safetensors.F32("x_t", shape, xv), safetensors.F32("eps", shape, any(eps).([]float32)))
	case []float64:
		// parity.py reads inputs as the model's dtype; float32 inputs keep the file simple.
		x32, e32 := make([]float32, len(xv)), make([]float32, len(xv))
		for i := range xv {
			x32[i], e32[i] = float32(xv[i]), float32(eps[i])
			x[i], eps[i] = T(x32[i]), T(e32[i])
		}
		in = append(in, safetensors.F32("x_t", shape, x32), safetensors.F32("eps", shape, e32))
	}
	if err := safetensors.Write(ipath, in, nil); err != nil {
		t.Fatal(err)
	}
	cmd := parityCmd(t, append(oracleArgs(cfg), "--weights", wpath, "--inputs", ipath, "--out", opath, "--grad")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("parity.py: %v\n%s", err, out)
	}
	res, _, err := safetensors.Read(opath)
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) []float64 {
		tt, ok := safetensors.Find(res, name)
		if !ok {
			t.Fatalf("oracle output has no %q", name)
		}
		v, err := tt.Float64s()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	net.ZeroGrads()
	pred := net.Forward(x, ts, b, nil)
	if e := relErr(pred, get("eps_theta"), 0); e > fwdTol {
		t.Errorf("eps_theta: relative error %.3g > %.0g", e, fwdTol)
	} else {
		t.Logf("eps_theta: relative error %.3g", e)
	}
	// L_simple = mean((eps - eps_theta)^2); d/d eps_theta = 2 (eps_theta - eps) / N.
	dEps := make([]T, len(pred))
	var loss float64
	for i, p := range pred {
		diff := float64(p) - float64(eps[i])
		loss += diff * diff
		dEps[i] = T(2 * diff / float64(len(pred)))
	}
	loss /= float64(len(pred))
	if want := get("loss")[0]; math.Abs(loss-want) > fwdTol*want {
		t.Errorf("loss %.8g, PyTorch %.8g", loss, want)
	}
	net.Backward(dEps)
	// The attention key biases have an exactly zero gradient (adding a constant to every key
	// shifts each softmax row by a constant), so both sides hold rounding noise there; errors
	// are measured against at least 1e-3 of the largest gradient of the model.
	var floor float64
	for _, ti := range net.Tensors() {
		floor = math.Max(floor, 1e-3*maxAbs(get("grad."+ti.Name)))
	}
	worst, worstName := 0.0, ""
	for _, ti := range net.Tensors() {
		e := relErr(net.Grads()[ti.Offset:ti.Offset+ti.Len], get("grad."+ti.Name), floor)
		if e > worst {
			worst, worstName = e, ti.Name
		}
		if e > gradTol {
			t.Errorf("grad %s: relative error %.3g > %.0g", ti.Name, e, gradTol)
		}
	}
	t.Logf("gradients: worst relative error %.3g (%s) over %d tensors", worst, worstName, len(net.Tensors()))
}

// TestParityPyTorch compares forward and every gradient with the PyTorch reference for the
// small model and a reduced cifar10-shaped model, float32 against float32: within 1e-4 (forward)
// and 1e-3 (gradients) relative. (A float64 comparison needs the oracle to run model.double(),
// which unet_bench.py's float32 timestep_embedding does not allow yet; our float64 path is
// covered by the finite-difference tests instead.)
func TestParityPyTorch(t *testing.T) {
	small, _ := Preset("small")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{{"small", small}, {"cifar10-reduced", reducedCIFAR10()}} {
		t.Run(tc.name+"/float32", func(t *testing.T) {
			m, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			m.Init(3)
			runParity(t, m, 1e-4, 1e-3)
		})
	}
}
