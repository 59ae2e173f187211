package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/viz"
	"ddpm/trainer"
)

// stepsIn is the number of step reports in NAME's log and the highest step among them.
func stepsIn(run, name string) (n int, top int64) {
	b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".log"))
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if p, ok := trainer.ParseProgress(sc.Bytes()); ok {
			n, top = n+1, max(top, p.Step)
		}
	}
	return n, top
}

// waitSteps waits until NAME's log holds more than n step reports, reaching step at least top.
func waitSteps(t *testing.T, run, name string, n int, top int64, out interface{ String() string }) {
	t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, s := stepsIn(run, name); got > n && s >= top {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never passed step %d:\n%s", name, top, out)
		}
	}
}

// waitGone waits until none of pids is a live process (a zombie counts as gone).
func waitGone(t *testing.T, pids ...int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		alive := 0
		for _, pid := range pids {
			st, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat"))
			if err == nil && !bytes.Contains(st, []byte(") Z ")) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("children %v still run a minute after ddpm local died", pids)
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// wantLossFrom1 checks that RUN/loss.csv holds every step from 1 to at least top, once each.
func wantLossFrom1(t *testing.T, run string, top int64) {
	t.Helper()
	pts, err := viz.ReadLossCSV(filepath.Join(run, localrun.LossCSV))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	var hi int64
	for _, p := range pts {
		seen[p.Step], hi = true, max(hi, p.Step)
	}
	for s := int64(1); s <= max(hi, top); s++ {
		if !seen[s] {
			t.Fatalf("loss.csv lacks step %d of 1..%d (%d rows, highest %d)", s, max(hi, top), len(pts), hi)
		}
	}
}

// TestLocalKilledKeepsLossHistory: `ddpm local` killed outright (SIGKILL: no handler runs)
// leaves in loss.csv every step it had seen, and the resumed run's loss.csv still starts at
// step 1. Before, the history lived in memory until the end: after the kill and a resume,
// loss.csv started after the last committed checkpoint. loss.csv and loss.png follow the umask.
func TestLocalKilledKeepsLossHistory(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 2 })
	cmd, out := localCommand(t, "--resume", run, "--quiet")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitSteps(t, run, "trainer-0", 0, 5, out)
	pids := []int{childPid(t, run, "trainer-0", 0), childPid(t, run, "coordinator-0", 0)}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitGone(t, pids...)
	n, top := stepsIn(run, "trainer-0")
	wantLossFrom1(t, run, top)

	cmd, out = localCommand(t, "--resume", run, "--quiet")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitSteps(t, run, "trainer-0", n, top+1, out)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if r := finish(t, cmd, out, cmd.Wait()); r.code != 130 {
		t.Fatalf("exit %d after SIGINT:\n%s", r.code, r.out)
	}
	_, top = stepsIn(run, "trainer-0")
	wantLossFrom1(t, run, top)
	// Files to share follow the umask (ddpm local inherits this process's), unlike keys.
	mask := syscall.Umask(0)
	syscall.Umask(mask)
	for _, f := range []string{localrun.LossCSV, localrun.LossPNG} {
		fi, err := os.Stat(filepath.Join(run, f))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := fi.Mode().Perm(), os.FileMode(0o666&^mask); got != want {
			t.Errorf("%s has mode %v, want %v", f, got, want)
		}
	}
}

// TestLocalBrokenOutputStopsCleanly: `ddpm local ... 2>&1 | head -3`: when the reader of its
// output goes away, ddpm local stops the run as on SIGHUP (status 130, every child stopped with
// a signal it handles, no pid file left) instead of dying of SIGPIPE (status 141) with its
// children killed and their pid files stale.
func TestLocalBrokenOutputStopsCleanly(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 2 })
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := localCommand(t, "--resume", run)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	br := bufio.NewReader(pr)
	var head bytes.Buffer
	for range 3 {
		line, err := br.ReadBytes('\n')
		head.Write(line)
		if err != nil {
			t.Fatalf("%v after\n%s", err, head.String())
		}
	}
	waitStepped(t, run, "trainer-0", &head)
	pids := []int{childPid(t, run, "trainer-0", 0), childPid(t, run, "coordinator-0", 0)}
	pr.Close() // head -3 exits; local's next line finds no reader
	err = cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() || ws.ExitStatus() != 130 {
		t.Fatalf("ddpm local ended with %v (signaled %v), want status 130 as on SIGHUP", err, ws.Signaled())
	}
	waitGone(t, pids...)
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "trainer-0.log")); !bytes.Contains(b, []byte(`"msg":"`+MsgLeft+`"`)) {
		t.Errorf("trainer-0 did not leave cleanly:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "coordinator-0.log")); !bytes.Contains(b, []byte(`"msg":"stopping"`)) {
		t.Errorf("the coordinator was not stopped with a signal it could handle:\n%s", b)
	}
	if pidFiles, _ := filepath.Glob(filepath.Join(run, localrun.LogsDir, "*.pid")); len(pidFiles) != 0 {
		t.Errorf("pid files left: %v", pidFiles)
	}
}
