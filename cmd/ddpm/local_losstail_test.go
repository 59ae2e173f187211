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

// TestLocalResumeKeepsUnreadableLoss: a resumed run whose loss.csv cannot be read moves it to
// loss.csv.unreadable, says so, and writes its own steps to a new loss.csv. Before, the file
// was said to be left as it is but was overwritten at the end: whatever it held was gone.
func TestLocalResumeKeepsUnreadableLoss(t *testing.T) {
	run := makeLocalRun(t, 1, nil)
	junk := []byte("step;loss\n1;0.5\n") // not ours: another tool's export, say
	if err := os.WriteFile(filepath.Join(run, localrun.LossCSV), junk, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runLocalCmd(t, "--resume", run, "--quiet")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.out)
	}
	aside := filepath.Join(run, localrun.LossCSV+".unreadable")
	if b, err := os.ReadFile(aside); err != nil || string(b) != string(junk) {
		t.Fatalf("%s: %q, %v; want the unreadable loss.csv kept\n%s", aside, b, err, r.out)
	}
	if !strings.Contains(r.out, "moved to "+aside) {
		t.Errorf("no line saying loss.csv was moved aside:\n%s", r.out)
	}
	wantLossFrom1(t, run, 4)
}
