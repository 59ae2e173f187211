package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestDroppedTrainerFailedRunSaysWhy: a trainer the coordinators dropped (it stalled past the
// heartbeat timeout) that comes back to a run which failed meanwhile exits 1 with the run's
// reason, as one that saw the failure in its assignment stream does (TestFailedRunLineSaysWhy),
// without trying to leave. Its stream ended at the unknown-member answer with the failed state
// read but not said: it took the end for a failure of its own, tried to leave a failed run and
// exited with 'the coordinator closed the assignment stream' alone.
func TestDroppedTrainerFailedRunSaysWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 100000, 1, 2, time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	waitFor(t, cli, "t0 training", time.Minute, func(s *fsm.State) bool { return s.Generation.Rank("t0") >= 0 && s.Step > 0 })
	if err := t0.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cli, "t0 dropped", 30*time.Second, func(s *fsm.State) bool { return s.Members["t0"] == nil })
	// tx: a member this test plays; its failure report fails the run.
	j := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "tx", Address: freeAddr(t), Version: "dev", ConfigHash: run.Hash()})
	keepAlive(t, cli, "tx", j.Incarnation)
	gen := waitFor(t, cli, "a generation of tx", 30*time.Second, func(s *fsm.State) bool { return s.Generation.Rank("tx") >= 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.ReportProgress(ctx, &api.ReportProgressRequest{Id: "tx", Incarnation: j.Incarnation, Generation: gen.Generation.Number,
		Failure: "trainer: training diverged: 5 consecutive steps with non-finite gradients"}); err != nil {
		t.Fatal(err)
	}
	failed := waitFor(t, cli, "the run failed", 10*time.Second, func(s *fsm.State) bool { return s.Status == fsm.StatusFailed })
	if err := t0.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-t0.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("t0 did not exit within 30 s of coming back to the failed run (log %s)", t0.log)
	}
	var ee *exec.ExitError
	want := "ddpm: trainer: the coordinator closed the assignment stream: the run has failed: " + failed.Reason + "\n"
	if !errors.As(t0.err, &ee) || ee.ExitCode() != 1 || t0.stderr.String() != want {
		b, _ := os.ReadFile(t0.log)
		t.Fatalf("t0 exited with %v, stderr %q; want status 1 and %q; log:\n%s", t0.err, t0.stderr.String(), want, b)
	}
}

// keepAlive heartbeats the member id (incarnation inc) that a test plays, every 100 ms until the
// test ends, as a trainer process does: without it, a heartbeat timeout of a second or two
// dropped the member (and ended its generation) whenever a loaded machine took that long
// between its join and its next call. Errors are ignored (a run that ended refuses them).
func keepAlive(t *testing.T, cli *coordinator.Client, id string, inc uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			cli.HeartbeatAs(hctx, id, inc)
			hcancel()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}
