package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
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

// TestMultiLineErrorEveryLinePrefixed: an error of several lines (a run config file breaking
// two rules) prints "ddpm: " before each line; the second line lacked it and read as another
// program's.
func TestMultiLineErrorEveryLinePrefixed(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("preset: mnist\nsteps: 10\nlr: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "R")
	cmd := exec.Command(bin, "local", "--config", cfg, "--out", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	want := "ddpm: " + cfg + ": invalid run config: lr must be in (0, 1], got 5\n" +
		"ddpm: " + cfg + ": invalid run config: checkpoint_every 50 is larger than the run (steps 10): give checkpoint_every 10 or less, or more steps\n"
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
		t.Errorf("ddpm local --config %s: %v, stderr\n%s\nwant exit 2,\n%s", cfg, err, stderr.String(), want)
	}
	mustNotExist(t, out)
}
