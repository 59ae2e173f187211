package main

import (
	"context"
	"path/filepath"
	"testing"
)

// TestLocalResumeWithRunFlagsSaysWayOut: --resume with a run-config flag (--steps 400, to train
// a finished run on) is refused, and the line names the way that exists: export the weights and
// start a new run from them with --init (the line gave no way out).
func TestLocalResumeWithRunFlagsSaysWayOut(t *testing.T) {
	run := filepath.Join(t.TempDir(), "my run")
	args := []string{"local", "--resume", run, "--steps", "400"}
	_, err := runCLI(t, context.Background(), nil, args...)
	w := run + "-weights.safetensors"
	wantExit(t, args, err, 2, "--resume continues a run with its own run.yaml; run-config flags cannot change it (to train on with other settings, such as more steps: ddpm checkpoint export '"+
		filepath.Join(run, "trainer-0", "checkpoints.db")+"' --out '"+w+"', then a new ddpm local --init '"+w+"' --out NEW with the settings you want; its step count and optimizer state start afresh)")
	mustNotExist(t, run)
}
