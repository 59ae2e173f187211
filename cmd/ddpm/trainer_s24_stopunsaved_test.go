package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// stopStandaloneAt starts a standalone trainer on vol (250 steps, a checkpoint every 50), sends
// it SIGTERM once it has logged a step of at least after, waits for it to exit with status 0 and
// returns the step it stopped at (its last "step" line) and its MsgStoppedUnsaved line's note
// ("" without one).
func stopStandaloneAt(t *testing.T, bin, vol string, after int64) (int64, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--standalone", "--preset", "mnist", "--steps", "250",
		"--checkpoint-every", "50", "--global-batch", "4", "--t", "20", "--data-dir", vol)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var last int64
	note, signalled := "", false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var l struct {
			Msg  string `json:"msg"`
			Step int64  `json:"step"`
			Note string `json:"note"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Msg {
		case "step":
			last = l.Step
			if l.Step >= after && !signalled {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				signalled = true
			}
		case MsgStoppedUnsaved:
			note = l.Note
		}
	}
	if err := cmd.Wait(); err != nil || !signalled {
		t.Fatalf("standalone trainer stopped after step %d: %v (signalled: %v)\nstderr:\n%s", after, err, signalled, stderr.String())
	}
	return last, note
}

// TestStandaloneStopSaysStepsLost: a standalone trainer stopped (SIGTERM) at step 3 of a run that
// checkpoints every 50 steps exits 0 with one log line saying the steps are not saved and that a
// restart begins at step 0; started again and stopped past step 50, its line names checkpoint 50
// and the steps trained again. It used to say only "finishing the current step, then leaving".
func TestStandaloneStopSaysStepsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	vol := filepath.Join(t.TempDir(), "vol")
	step, note := stopStandaloneAt(t, bin, vol, 3)
	if want := fmt.Sprintf("stopped at step %d; this volume holds no checkpoint yet (one every 50 steps): started again, the trainer begins at step 0", step); note != want {
		t.Fatalf("first stop's note %q, want %q", note, want)
	}
	step, note = stopStandaloneAt(t, bin, vol, 53)
	if want := fmt.Sprintf("stopped at step %d; this volume's newest checkpoint is step 50: started again, the trainer resumes from it and trains steps 51-%d again", step, step); step >= 100 || note != want {
		t.Fatalf("second stop (step %d)'s note %q, want %q", step, note, want)
	}
}
