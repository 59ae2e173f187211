package main

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestLocalS26DoubleSignalOneStop: a SIGTERM and a SIGINT sent to a running `ddpm local` one
// right after the other (as GNU timeout, which signals its child and then its process group,
// or a service manager may deliver one stop twice) are one stop: the trainers finish their
// step and the coordinators stop cleanly, and the run ends with status 130 and the plain
// interrupted line, not the second Ctrl-C's kill of every child. The old code counted the two
// as a second Ctrl-C and killed them all at once ("interrupted again: ...").
func TestLocalS26DoubleSignalOneStop(t *testing.T) {
	run := makeLocalRun(t, 2, func(r *config.Run) {
		r.Steps, r.CheckpointEvery, r.HeartbeatTimeout = 100000, 5, config.Duration(10*time.Second)
	})
	cmd, live, exited, _ := startLocalToCheckpoint(t, "--resume", run, "--quiet", "--grace", "90s")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(80 * time.Second):
		t.Fatalf("ddpm local still running 80 s after SIGTERM and SIGINT (its clean stop takes seconds):\n%s", live)
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.Fatal(werr)
	}
	lines := strings.Split(strings.TrimSpace(live.String()), "\n")
	want := "ddpm: interrupted; continue with: ddpm local --resume " + run
	if code := cmd.ProcessState.ExitCode(); code != 130 || lines[len(lines)-1] != want || strings.Contains(live.String(), "interrupted again") {
		t.Fatalf("after SIGTERM and SIGINT at once: exit %d, last line %q\nwant exit 130, the clean stop and %q\n%s", code, lines[len(lines)-1], want, live)
	}
}

// startLocalToCheckpoint starts `ddpm local args...` (a --resume of a makeLocalRun folder),
// its output in live, and returns once its cluster has committed a checkpoint, with the state
// that says so; exited gets the result of its Wait. A cleanup kills it.
func startLocalToCheckpoint(t *testing.T, args ...string) (cmd *exec.Cmd, live *lockedLog, exited <-chan error, st *fsm.State) {
	t.Helper()
	cmd, _ = localCommand(t, args...)
	live = &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	run := args[slices.Index(args, "--resume")+1]
	addrs, certs, err := runFolderCluster(run)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := coordinator.Dial(addrs, tlsauthtest.Load(t, certs, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	st = waitFor(t, cli, "committed checkpoint", 90*time.Second, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })
	return cmd, live, done, st
}
