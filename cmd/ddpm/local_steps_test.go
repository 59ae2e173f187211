package main

import (
	"context"
	"path/filepath"
	"testing"
)

// TestLocalStepsShorterThanCheckpointEvery: ddpm local --steps below the preset's
// checkpoint_every names the flag and the value to give, before anything is made; it read
// "flags: invalid run config: checkpoint_every 50 is larger than the run (steps 20)".
func TestLocalStepsShorterThanCheckpointEvery(t *testing.T) {
	out := filepath.Join(t.TempDir(), "R")
	args := []string{"local", "--steps", "20", "--out", out}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--steps 20 is shorter than checkpoint_every 50 of preset mnist: give --checkpoint-every 20 or less too")
	mustNotExist(t, out)
}
