package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
)

// TestLocalRestartsStoppedTrainerS26: a trainer of ddpm local that stops answering (SIGSTOP,
// as a hung driver or a debugger would stop it) once it has trained is found by ddpm local's
// liveness probe of its /healthz (over HTTPS: --http-tls): after --liveness-timeout of failed probes ddpm local says so in
// one line naming it, its pid, the URL and why, SIGKILLs it and restarts it, and the run ends
// (status 0) with the same bits as an undisturbed run of the same config: loss.csv byte-equal,
// the final checkpoint's state hash equal on both trainers. Before, the run stalled for good:
// the other trainer waited for min_trainers and ddpm local noticed nothing.
func TestLocalRestartsStoppedTrainerS26(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ddpm local twice")
	}
	const steps = 24
	ref, edit := undisturbedRunS25(t, steps)

	// Served over HTTPS (--http-tls, kept from the run's first start): the probes verify the
	// children with the run's CA. The reference run's plain HTTP changes no bit of training.
	run := makeLocalRun(t, 2, edit)
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	man.HTTPTLS = true
	if err := localrun.WriteManifest(run, man); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // bounds a hang only
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.DDPMBinary(t), "local", "--resume", run, "--quiet", "--liveness-timeout", "5s")
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Its step reports (Spec.Ready) end its start-up: the probe counts failures from here,
	// whether or not a probe has reached it yet.
	waitSteps(t, run, "trainer-1", 0, 6, &out)
	pid := childPid(t, run, "trainer-1", 0)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Should the test end before ddpm local killed it, the stopped trainer must not stay behind
	// (the SIGTERM its parent's death sends waits for a SIGCONT).
	t.Cleanup(func() {
		if st, err := os.ReadFile(filepath.Join("/proc", itoa(pid), "stat")); err == nil && bytes.Contains(st, []byte(") T ")) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if man, err = localrun.ReadManifest(run); err != nil { // its ports as this start claimed them
		t.Fatal(err)
	}
	head := fmt.Sprintf("ddpm local: trainer-1 (pid %d) is unresponsive: GET https://%s/healthz failed for ", pid, localrun.Addr(man.TrainerPorts[1].HTTP))
	tail := " (no answer within 1s); killing it (SIGKILL) to restart it (--liveness-timeout 5s)"
	var line string
	for deadline := time.Now().Add(time.Minute); line == ""; time.Sleep(50 * time.Millisecond) {
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, head) && strings.HasSuffix(l, tail) {
				line = l
			}
		}
		if line == "" && time.Now().After(deadline) {
			t.Fatalf("no line\n%s...%s\nwithin a minute of trainer-1's SIGSTOP:\n%s", head, tail, out.String())
		}
	}
	failed, err := time.ParseDuration(strings.TrimSuffix(strings.TrimPrefix(line, head), tail))
	if err != nil || failed < 5*time.Second {
		t.Errorf("%q: failed for %v (%v), want at least the 5s limit", line, failed, err)
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the run with a stopped trainer: exit %d (%v)\n%s", code, err, out.String())
	}
	if n := strings.Count(out.String(), "is unresponsive"); n != 1 {
		t.Errorf("%d unresponsive lines, want 1:\n%s", n, out.String())
	}

	sameRunS25(t, ref, run, 2, steps)
}

// TestLocalLivenessTimeoutFlagS26: --liveness-timeout below the floor, or negative, is refused
// with one line and exit 2 before anything is written.
func TestLocalLivenessTimeoutFlagS26(t *testing.T) {
	for _, v := range []string{"2s", "-1s"} {
		dir := filepath.Join(t.TempDir(), "run")
		r := runLocalCmd(t, "--out", dir, "--steps", "4", "--liveness-timeout", v)
		want := fmt.Sprintf("ddpm: --liveness-timeout %s: want at least 5s (a shorter limit could kill a busy process between two probes), or 0 for no liveness probe", v)
		if r.code != 2 || r.lastLine() != want {
			t.Errorf("--liveness-timeout %s: exit %d, last line\n%s\nwant exit 2 and\n%s", v, r.code, r.lastLine(), want)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("--liveness-timeout %s: %s exists (%v)", v, dir, err)
		}
	}
}
