package main

import (
	"context"
	"strings"
	"testing"
)

// TestModelInfoPresetArgument: `ddpm model info tiny` prints the tiny preset as --preset tiny
// does; it used to fail with 'unknown command "tiny" for "ddpm model info"'. An unknown name and
// a second, different --preset are one line each, exit 2.
func TestModelInfoPresetArgument(t *testing.T) {
	byFlag, err := runCLI(t, context.Background(), nil, "model", "info", "--preset", "tiny")
	if err != nil {
		t.Fatal(err)
	}
	byArg, err := runCLI(t, context.Background(), nil, "model", "info", "tiny")
	if err != nil || byArg != byFlag || !strings.HasPrefix(byArg, "preset          tiny\n") ||
		!strings.Contains(byArg, "input           1 x 32 x 32\n") || !strings.Contains(byArg, "parameters      208,305 (208305)\n") {
		t.Fatalf("model info tiny: %v\n%s\nwant, as --preset tiny:\n%s", err, byArg, byFlag)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "info", "nope"}, `model info nope: unet: invalid config: unknown preset "nope" (known: celebahq256, cifar10, lsun256, small, tiny)`},
		{[]string{"model", "info", "tiny", "--preset", "small"}, "model info tiny --preset small: name the preset once"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}

// TestModelCommandsTakeModelFlag: the model commands take --model for the U-Net preset, as sample,
// eval, local and trainer name it (their --preset is a dataset preset); `model info --model tiny`
// said "unknown flag: --model". The output is that of --preset tiny.
func TestModelCommandsTakeModelFlag(t *testing.T) {
	byPreset, err := runCLI(t, context.Background(), nil, "model", "info", "--preset", "tiny")
	if err != nil {
		t.Fatal(err)
	}
	byModel, err := runCLI(t, context.Background(), nil, "model", "info", "--model", "tiny")
	if err != nil || byModel != byPreset {
		t.Fatalf("model info --model tiny: %v\n%s\nwant, as --preset tiny:\n%s", err, byModel, byPreset)
	}
	out, err := runCLI(t, context.Background(), nil, "model", "bench", "--model", "tiny", "--mode", "forward", "--batch", "1", "--warmup", "0", "--steps", "1")
	if err != nil || !strings.Contains(out, `"model":"tiny"`) || !strings.Contains(out, `"params":208305`) {
		t.Fatalf("model bench --model tiny: %v\n%s", err, out)
	}
	args := []string{"model", "info", "tiny", "--model", "small"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "model info tiny --preset small: name the preset once")
}
