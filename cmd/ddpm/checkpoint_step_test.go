package main

import (
	"context"
	"path/filepath"
	"testing"
)

// TestCheckpointMissingStep: checkpoint verify and export with a --step the file does not hold
// (pruned by keep_checkpoints, or mistyped) name the file and the steps it holds, exit 2, and
// export writes nothing; verify said "RUN has no checkpoint of step 7", export "checkpoint: FILE
// step 7: checkpoint not found".
func TestCheckpointMissingStep(t *testing.T) {
	dir, file := evalFixture(t)
	out := filepath.Join(t.TempDir(), "w.safetensors")
	want := "--step 7: " + file + " holds no checkpoint of that step (it holds step 0)"
	for _, args := range [][]string{
		{"checkpoint", "verify", dir, "--step", "7"},
		{"checkpoint", "export", dir, "--step", "7", "--out", out},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, want)
	}
	mustNotExist(t, out)
}
