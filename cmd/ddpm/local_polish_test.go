package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"ddpm/internal/safetensors"
	"ddpm/unet"
)

// writePresetWeights writes freshly initialized weights of U-Net preset name to dir/FILE and
// returns the path.
func writePresetWeights(t *testing.T, dir, name, file string) string {
	t.Helper()
	cfg, err := unet.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	path := filepath.Join(dir, file)
	if err := unet.WriteSafetensors(path, m.Tensors(), m.Params(), nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLocalInitOtherPreset: ddpm local --init given weights of the small U-Net for a tiny run
// (mnist) names the model the file holds and both ways out in one line, exit 2, no run folder
// (it was "unet: weights do not match the model: W: "temb.dense0.weight" has shape [128 32], the
// model wants [64 16]"). Weights of no preset keep the line naming the tensor that does not fit.
func TestLocalInitOtherPreset(t *testing.T) {
	root := t.TempDir()
	small := writePresetWeights(t, root, "small", "small.safetensors")
	tiny := writePresetWeights(t, root, "tiny", "tiny.safetensors")
	ts, _, err := safetensors.Read(tiny)
	if err != nil {
		t.Fatal(err)
	}
	ts[0].Shape = append([]int{1}, ts[0].Shape...)
	odd := filepath.Join(root, "odd.safetensors")
	if err := safetensors.Write(odd, ts, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ init, want string }{
		{small, "--init " + small + ` holds weights of U-Net "small", this run's model is "tiny": give weights of "tiny" (ddpm checkpoint export of a tiny run) or --model small`},
		{odd, "--init " + odd + ` is not weights of model "tiny": unet: weights do not match the model: ` + odd + `: "` + ts[0].Name + `" has shape ` + fmt.Sprint(ts[0].Shape) + `, the model wants ` + fmt.Sprint(ts[0].Shape[1:])},
	} {
		out := filepath.Join(root, "new")
		args := []string{"local", "--steps", "50", "--init", tc.init, "--out", out, "--quiet"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, out)
	}
}
