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
