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

// TestFlagEnvValueWords: a DDPM_<FLAG> value that the flag cannot take is said as a command
// line's is, naming the variable and the flag: `DDPM_TIMEOUT="5" (--timeout): not a duration
// (e.g. 30s, 5m)`, exit 2. It quoted time.ParseDuration ("time: missing unit in duration").
func TestFlagEnvValueWords(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"DDPM_TIMEOUT=5", []string{"status", "--coordinator", "127.0.0.1:1"},
			`DDPM_TIMEOUT="5" (--timeout): not a duration (e.g. 30s, 5m)`},
		{"DDPM_STEPS=1O", []string{"coordinator", "--id", "c0", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2",
			"--peers", "c0=127.0.0.1:1=127.0.0.1:2", "--data-dir", filepath.Join(t.TempDir(), "raft"), "--insecure", "--preset", "mnist"},
			`DDPM_STEPS="1O" (--steps): not a whole number`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var xe *exec.ExitError
		want := "ddpm: " + tc.want + "\n"
		if !errors.As(err, &xe) || xe.ExitCode() != 2 || stderr.String() != want {
			t.Errorf("%s ddpm %v: %v, stderr %q; want exit 2, %q", tc.env, tc.args, err, stderr.String(), want)
		}
	}
}
