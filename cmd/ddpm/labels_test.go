package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckpointLabelsModel: list and export labelled the checkpoint's model (the run config's
// model, tiny for the mnist preset) PRESET, while ddpm status tells the preset (mnist) and the
// model (tiny) apart; they now say MODEL / model. verify counts "1 checkpoint".
func TestCheckpointLabelsModel(t *testing.T) {
	_, file := evalFixture(t)
	args := []string{"checkpoint", "list", file}
	out, err := runCLI(t, context.Background(), nil, args...)
	if err != nil || !strings.HasPrefix(out, "STEP  GENERATION  COMMITTED  MODEL  SIZE") || !strings.Contains(out, "  "+fixtureRun.Model+"  ") {
		t.Errorf("ddpm %v: %v\n%s", args, err, out)
	}
	to := filepath.Join(t.TempDir(), "w.safetensors")
	args = []string{"checkpoint", "export", file, "--out", to}
	out, err = runCLI(t, context.Background(), nil, args...)
	if want := fmt.Sprintf("%s: step 0 parameters (%d tensors, model %s) -> %s\n", file, len(fixtureCkpt.Tensors), fixtureRun.Model, to); err != nil || out != want {
		t.Errorf("ddpm %v: %v\n%q\nwant %q", args, err, out, want)
	}
	args = []string{"checkpoint", "verify", file}
	out, err = runCLI(t, context.Background(), nil, args...)
	if err != nil || !strings.HasSuffix(out, file+": 1 checkpoint verified\n") {
		t.Errorf("ddpm %v: %v\n%s", args, err, out)
	}
}
