package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// TestLocalResumeKeepsLossAfterTornRow: a loss.csv whose last row was cut short (a kill or a
// crash in the middle of an append: no newline at its end) still gives the resumed run the
// earlier sessions' steps. Before, the resume said 'loss files: malformed loss csv', turned the
// journal off and at the end rewrote loss.csv from this session's steps alone: the steps up to
// the checkpoint it resumed from were gone.
func TestLocalResumeKeepsLossAfterTornRow(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 2 })
	session := func(n int, top int64) {
		t.Helper()
		cmd, out := localCommand(t, "--resume", run, "--quiet")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitSteps(t, run, "trainer-0", n, top, out)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if r := finish(t, cmd, out, cmd.Wait()); r.code != 130 {
			t.Fatalf("exit %d after SIGINT:\n%s", r.code, r.out)
		} else if strings.Contains(r.out, "loss files") {
			t.Errorf("resume complained about loss.csv:\n%s", r.out)
		}
	}
	session(0, 5)
	n, top := stepsIn(run, "trainer-0")
	wantLossFrom1(t, run, top)
	f, err := os.OpenFile(filepath.Join(run, localrun.LossCSV), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(itoa(int(top+1)) + ",0.03"); err != nil { // half a row
		t.Fatal(err)
	}
	f.Close()
	session(n, top+1)
	_, top = stepsIn(run, "trainer-0")
	wantLossFrom1(t, run, top)
}
