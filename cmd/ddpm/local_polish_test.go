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

// TestLocalSamplesWarning: a --samples count above 1024 gets one start-up line with the rough
// time its sampling takes after training (n * T forward passes at the measured time of one),
// and the default's count; 1024 and fewer get none (ddpm local took --samples 100000, a day of
// sampling on two cores, without a word). The measurement is fixed here at 0.9 ms per image
// and step; the real one of the tiny model is positive and well under a second.
func TestLocalSamplesWarning(t *testing.T) {
	if per, err := sampleImageStep("tiny"); err != nil || !(per > 0 && per < 1) {
		t.Errorf("sampleImageStep(tiny) = %g s, %v", per, err)
	}
	defer func(f func(string) (float64, error)) { sampleImageStep = f }(sampleImageStep)
	sampleImageStep = func(string) (float64, error) { return 0.0009, nil }
	for _, tc := range []struct {
		n, T int
		want string
	}{
		{100000, 1000, "ddpm local: warning: --samples 100000 will take about 1 day of sampling after training (1000 reverse steps per image on this machine); samples.png needs far fewer: the default is 64"},
		{1025, 1000, "ddpm local: warning: --samples 1025 will take about 15 min of sampling after training (1000 reverse steps per image on this machine); samples.png needs far fewer: the default is 64"},
		{200000, 4000, "ddpm local: warning: --samples 200000 will take about 8.3 days of sampling after training (4000 reverse steps per image on this machine); samples.png needs far fewer: the default is 64"},
		{1024, 1000, ""},
		{64, 1000, ""},
		{0, 1000, ""},
	} {
		if got := localSamplesWarning(tc.n, tc.T, "tiny"); got != tc.want {
			t.Errorf("localSamplesWarning(%d, %d):\n got %q\nwant %q", tc.n, tc.T, got, tc.want)
		}
	}
}
