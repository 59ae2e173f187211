package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
)

// childPid reads RUN/logs/NAME.pid, waiting up to a minute for it to name a pid other than not.
func childPid(t *testing.T, run, name string, not int) int {
	t.Helper()
	p := filepath.Join(run, localrun.LogsDir, name+".pid")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(p)
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != not {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never named a pid other than %d", p, not)
		}
	}
}

// waitStepped waits until NAME's log holds a step report.
func waitStepped(t *testing.T, run, name string, out fmt.Stringer) {
	t.Helper()
	logf := filepath.Join(run, localrun.LogsDir, name+".log")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if b, _ := os.ReadFile(logf); bytes.Contains(b, []byte(`"step":`)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never stepped:\n%s", name, out)
		}
	}
}

// TestLocalGivesUpOnTrainerOutOfRestarts: a trainer killed once more after its 5 restarts in
// the window stops the whole run at once with one line naming it, its failures, the window and
// its log (before, local waited on trainer-0 forever, which waited for a world of two), and the
// other processes are stopped cleanly.
func TestLocalGivesUpOnTrainerOutOfRestarts(t *testing.T) {
	run := makeLocalRun(t, 2, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 50 })
	cmd, out := localCommand(t, "--resume", run, "--quiet")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitStepped(t, run, "trainer-1", out)
	pid := 0
	for range trainerRestarts + 1 {
		pid = childPid(t, run, "trainer-1", pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	r := finish(t, cmd, out, cmd.Wait())
	logf := filepath.Join(run, localrun.LogsDir, "trainer-1.log")
	want := fmt.Sprintf("ddpm: trainer-1 failed 6 times in 10m0s; giving up: signal: killed (see %s)", logf)
	if r.code != 1 || r.lastLine() != want || strings.Count(r.out, "ddpm: ") != 1 || strings.Count(r.out, "exited (signal: killed); restarting it") != trainerRestarts {
		t.Fatalf("exit %d with\n%s\nwant exit 1 after 5 restarts, ending in the one line\n%s", r.code, r.out, want)
	}
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "trainer-0.log")); !bytes.Contains(b, []byte(`"msg":"`+MsgLeft+`"`)) {
		t.Errorf("trainer-0 did not leave cleanly:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "coordinator-0.log")); !bytes.Contains(b, []byte(`"msg":"stopping"`)) {
		t.Errorf("the coordinator was not stopped with a signal it could handle:\n%s", b)
	}
}

// TestLocalSIGHUPStopsCleanly: closing the terminal (SIGHUP) stops the run as Ctrl-C does:
// status 130, the resume hint, every child stopped with SIGTERM and gone. While it runs, the
// coordinator address local prints at the start is one `ddpm status` can use as printed.
func TestLocalSIGHUPStopsCleanly(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 50 })
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	cmd, out := localCommand(t, "--resume", run, "--quiet")
	// Read while the process writes: through a lock (a bytes.Buffer is no such thing).
	live := &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitStepped(t, run, "trainer-0", live)
	grpc, dash := localrun.Addr(man.CoordinatorPorts[0].GRPC), localrun.Addr(man.CoordinatorPorts[0].HTTP)
	certs := filepath.Join(run, localrun.CertsDir)
	line := fmt.Sprintf("ddpm local: coordinators %s (ddpm status %s, ddpm loss %s; from elsewhere --coordinator %s --certs %s); dashboard http://%s/", grpc, run, run, grpc, certs, dash)
	if !strings.Contains(live.String(), line+"\n") {
		t.Fatalf("no line %q:\n%s", line, live)
	}
	st, err := exec.Command(testutil.DDPMBinary(t), "status", "--coordinator", grpc, "--certs", certs).CombinedOutput()
	if err != nil || !bytes.Contains(st, []byte("running")) {
		t.Fatalf("ddpm status at the printed address: %v\n%s", err, st)
	}
	pids := []int{childPid(t, run, "trainer-0", 0), childPid(t, run, "coordinator-0", 0)}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	out.WriteString(live.String())
	r := finish(t, cmd, out, werr)
	want := "ddpm: interrupted; continue with: ddpm local --resume " + run
	if r.code != 130 || r.lastLine() != want || !strings.Contains(r.out, "ddpm local: stopping (trainers finish their step, then coordinators)") {
		t.Fatalf("exit %d with\n%s\nwant exit 130 ending in %q", r.code, r.out, want)
	}
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "trainer-0.log")); !bytes.Contains(b, []byte(`"msg":"`+MsgLeft+`"`)) {
		t.Errorf("trainer-0 did not leave cleanly:\n%s", b)
	}
	if b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "coordinator-0.log")); !bytes.Contains(b, []byte(`"msg":"stopping"`)) {
		t.Errorf("the coordinator was not stopped with a signal it could handle:\n%s", b)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("child %d outlived ddpm local", pid)
		}
	}
}

// flippedPrepared prepares mnist:test into a temporary folder, flips one byte of its shard and
// returns the folder, the shard's path and its sha256 as it is now and as index.json has it.
func flippedPrepared(t *testing.T) (dir, shard, got, want string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "prep")
	if b, err := exec.Command(testutil.DDPMBinary(t), "dataset", "prepare", "mnist:test", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("dataset prepare: %v\n%s", err, b)
	}
	shard = filepath.Join(dir, "shard-00000.bin")
	b, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	want = hex.EncodeToString(sum[:])
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(shard, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256(b)
	return dir, shard, hex.EncodeToString(sum[:]), want
}

// TestCorruptedShardIsFatal: a prepared shard that fails its sha256 check ends a standalone
// trainer with status 2 and one line naming the file (before, it waited for a next generation
// forever), and stops `ddpm local` at the trainer's first failure with one line.
func TestCorruptedShardIsFatal(t *testing.T) {
	dir, shard, got, want := flippedPrepared(t)
	reason := fmt.Sprintf("trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect %s checks every shard) and start the trainer again", shard, got, want, dir)

	vol := filepath.Join(t.TempDir(), "vol")
	c := exec.Command(testutil.DDPMBinary(t), "trainer", "--standalone", "--preset", "mnist", "--dataset", dir,
		"--steps", "20", "--checkpoint-every", "20", "--data-dir", vol)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		<-done
		t.Fatalf("the standalone trainer still ran after 60 s:\n%s", &stderr)
	}
	if code := c.ProcessState.ExitCode(); code != 2 || strings.TrimSpace(stderr.String()) != "ddpm: "+reason {
		t.Fatalf("standalone trainer: exit %d with\n%s\nwant exit 2 with the one line\nddpm: %s", code, &stderr, reason)
	}

	run := makeLocalRun(t, 1, func(r *config.Run) { r.Dataset = dir })
	r := runLocalCmd(t, "--resume", run, "--quiet")
	logf := filepath.Join(run, localrun.LogsDir, "trainer-0.log")
	// A trainer of ddpm local is started again by resuming the run (the trainer's restartAdvice).
	reason = strings.Replace(reason, "start the trainer again", "resume the run (ddpm local --resume "+shellWord(run)+")", 1)
	wantLine := fmt.Sprintf("ddpm: trainer-0 failed at start-up (exit status 2): %s (see %s)", reason, logf)
	if r.code != 1 || r.lastLine() != wantLine || strings.Count(r.out, "ddpm: ") != 1 {
		t.Fatalf("exit %d with\n%s\nwant exit 1 ending in the one line\n%s", r.code, r.out, wantLine)
	}
}
