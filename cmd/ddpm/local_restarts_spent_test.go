package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ddpm/internal/localrun"
)

// TestRestartsSpentSaysWhy: a child that gave up after its restarts with its command's error
// line last (a trainer whose volume is full, exit 1) has that reason in local's one line; one
// killed mid-run, whose last line is a log record, has its exit only. The line said "giving up:
// exit status 1 (see ...)" and the cause ("no space left on device") never reached the
// terminal under --quiet.
func TestRestartsSpentSaysWhy(t *testing.T) {
	exit1 := exec.Command("sh", "-c", "exit 1").Run()
	var ee *exec.ExitError
	if !errors.As(exit1, &ee) {
		t.Fatalf("sh -c 'exit 1': %v", exit1)
	}
	out := t.TempDir()
	logf := filepath.Join(out, localrun.LogsDir, "trainer-1.log")
	for _, tc := range []struct {
		last string
		err  error
		want string
	}{
		{"ddpm: trainer: this trainer's volume: checkpoint: save step 40: grow RUN/trainer-1/checkpoints.db: no space left on device", exit1,
			"trainer-1 failed 6 times in 10m0s; giving up: exit status 1: trainer: this trainer's volume: checkpoint: save step 40: grow RUN/trainer-1/checkpoints.db: no space left on device (see " + logf + ")"},
		{`{"time":"2026-11-30T17:00:00Z","level":"INFO","msg":"step","step":12}`, errors.New("signal: killed"),
			"trainer-1 failed 6 times in 10m0s; giving up: signal: killed (see " + logf + ")"},
	} {
		err := restartsSpent(out, &localrun.RestartsSpentError{Name: "trainer-1", Failures: 6, Window: 10 * time.Minute, LastLine: tc.last, Err: tc.err})
		if err.Error() != tc.want {
			t.Errorf("last line %q:\n got %s\nwant %s", tc.last, err, tc.want)
		}
	}
}
