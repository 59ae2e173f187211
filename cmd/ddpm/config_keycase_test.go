package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestConfigKeyCaseCLI: the real binary refuses a run config whose key is a field's name in other
// capitals (Steps, LR) as it refuses any unknown key: one line naming the file, the line and the
// field meant, exit 2, and neither ddpm local's run folder nor the trainer's volume is made.
// `Steps: 10` used to be read as steps: 10 (and refused as shorter than checkpoint_every 50).
func TestConfigKeyCaseCLI(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "run.yaml")
	run, vol := filepath.Join(tmp, "run"), filepath.Join(tmp, "vol")
	for _, tc := range []struct {
		doc  string
		args []string
		want string
	}{
		{"preset: mnist\nSteps: 10\n", []string{"local", "--config", cfg, "--out", run},
			`line 2: unknown field "Steps"; did you mean steps?`},
		{"preset: mnist\nsteps: 100\nLR: 5\n", []string{"trainer", "--standalone", "--config", cfg, "--data-dir", vol},
			`line 3: unknown field "LR"; did you mean lr?`},
		{"preset: mnist\nSTEPS: 0\n", []string{"local", "--config", cfg, "--data", "mnist", "--out", run},
			`line 2: unknown field "STEPS"; did you mean steps?`},
	} {
		if err := os.WriteFile(cfg, []byte(tc.doc), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var xe *exec.ExitError
		want := "ddpm: " + cfg + ": cannot load run config: " + tc.want + "\n"
		if !errors.As(err, &xe) || xe.ExitCode() != 2 || stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("ddpm %v with %q: %v, stdout %q, stderr %q; want exit 2, %q", tc.args, tc.doc, err, stdout.String(), stderr.String(), want)
		}
		mustNotExist(t, run)
		mustNotExist(t, vol)
	}
}
