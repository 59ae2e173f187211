package checkpoint_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/safetensors"
	"ddpm/internal/testutil"
	"ddpm/unet"
)

// TestExportLoadsInPyTorch stores a checkpoint of the small U-Net, exports its EMA weights,
// and runs the reference PyTorch model (anchors/pytorch/parity.py, Debian's python3-torch) on
// the exported file: eps_theta must equal our model's with the same EMA weights. The oracle is
// part of the test setup (make setup): the test fails, never skips, without it.
func TestExportLoadsInPyTorch(t *testing.T) {
	cfg, err := unet.Preset("small")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Dropout = 0
	net, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	net.Init(3)
	r := rand.New(rand.NewPCG(5, 6))
	params := slices.Clone(net.Params())
	ema := make([]float32, len(params))
	for i, p := range params {
		// EMA differs from the parameters, and the near-zero layers carry signal.
		ema[i] = p + float32(0.02*r.NormFloat64())
	}
	var infos []checkpoint.TensorInfo
	for _, ti := range net.Tensors() {
		infos = append(infos, checkpoint.TensorInfo{Name: ti.Name, Shape: ti.Shape, Offset: ti.Offset, Len: ti.Len})
	}
	dir := t.TempDir()
	st, err := checkpoint.Open(filepath.Join(dir, "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Save(&checkpoint.Checkpoint{Step: 100, Preset: "small", Tensors: infos, Params: params, EMA: ema,
		AdamM: make([]float32, len(params)), AdamV: make([]float32, len(params))}); err != nil {
		t.Fatal(err)
	}
	c, err := st.Get(100)
	if err != nil {
		t.Fatal(err)
	}
	wpath := filepath.Join(dir, "model.safetensors")
	if err := checkpoint.Export(wpath, c, true); err != nil {
		t.Fatal(err)
	}
	ts, meta, err := safetensors.Read(wpath)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != len(infos) || meta["weights"] != "ema" || meta["step"] != "100" || meta["state"] != checkpoint.StateHash(c) {
		t.Fatalf("export: %d tensors, metadata %v", len(ts), meta)
	}

	const b = 2
	d := cfg.InCh * cfg.Resolution * cfg.Resolution
	x := make([]float32, b*d)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	shape := []int{b, cfg.InCh, cfg.Resolution, cfg.Resolution}
	ipath, opath := filepath.Join(dir, "in.safetensors"), filepath.Join(dir, "out.safetensors")
	if err := safetensors.Write(ipath, []safetensors.Tensor{safetensors.F32("x_t", shape, x), safetensors.I64("t", []int{b}, []int64{3, 850})}, nil); err != nil {
		t.Fatal(err)
	}
	cmd := testutil.ParityCommand(t, "--model", "small", "--weights", wpath, "--inputs", ipath, "--out", opath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("parity.py: %v\n%s", err, out)
	}
	res, _, err := safetensors.Read(opath)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := safetensors.Find(res, "eps_theta")
	if !ok {
		t.Fatal("oracle output has no eps_theta")
	}
	want, err := tt.Float64s()
	if err != nil {
		t.Fatal(err)
	}

	copy(net.Params(), c.EMA)
	got := net.Forward(x, []int32{3, 850}, b, nil)
	var maxDiff, scale float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	if rel := maxDiff / scale; rel > 1e-4 {
		t.Fatalf("eps_theta from the exported EMA weights: relative error %.3g > 1e-4", rel)
	} else {
		t.Logf("eps_theta: relative error %.3g (max |eps_theta| %.3g)", rel, scale)
	}
	// The parameters export too, and differ from the EMA export.
	ppath := filepath.Join(dir, "params.safetensors")
	if err := checkpoint.Export(ppath, c, false); err != nil {
		t.Fatal(err)
	}
	pts, _, _ := safetensors.Read(ppath)
	if slices.Equal(pts[0].Data, ts[0].Data) {
		t.Fatal("params and EMA exports are identical")
	}
}
