package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// limitedBinary writes DIR/ddpm-fsize, a script that runs bin under `prlimit --fsize=limit`: a
// process whose files cannot grow past limit bytes, as on a full volume (writes past it fail
// with EFBIG). It skips the test without prlimit.
func limitedBinary(t *testing.T, dir, bin string, limit int64) string {
	t.Helper()
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed:", err)
	}
	p := filepath.Join(dir, "ddpm-fsize")
	script := fmt.Sprintf("#!/bin/sh\nexec %q --fsize=%d -- %q \"$@\"\n", prlimit, limit, bin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// endlessSteps is the length of a process test's run that its trainers never finish: a test
// that needs the run to go on while a trainer leaves and comes back waits on what the
// coordinators record (a generation, a commit) and stops the trainers itself (stopTrainer),
// rather than racing the healthy trainers to the run's end (at 64 steps, a loaded machine let
// t0 finish the run before t1 came back).
const endlessSteps = 1_000_000

// stopTrainer sends p SIGTERM and waits (1 minute at most) for it to leave and exit with
// status 0.
func stopTrainer(t *testing.T, name string, p *trainerProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("%s stopped: %v; stderr:\n%s", name, p.err, p.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM (log %s)", name, p.log)
	}
}

// commitIn waits (2 minutes at most) for a checkpoint committed in generation gen past the step
// the generation started from: every member of gen trained and saved.
func commitIn(t *testing.T, cli *coordinator.Client, what string, gen uint64) *fsm.State {
	t.Helper()
	return waitFor(t, cli, what, 2*time.Minute, func(s *fsm.State) bool {
		n := len(s.Checkpoints)
		return s.Generation.Number == gen && n > 0 && s.Checkpoints[n-1].Step > s.Generation.StartStep
	})
}

// TestVolumeFullLeavesRunGoing: trainer t1's volume cannot grow (a file-size limit below one
// checkpoint, as a full disk) in a run of two trainers (min_trainers 1). At its first save (or
// its fetch of the checkpoint it starts from) t1 leaves the cluster and exits with status 1 and
// one line naming the file and the cause; the healthy t0 goes on alone in a new generation
// (and commits in it), t1 started again on the same volume without the limit joins again, and
// the ring of both commits a checkpoint (t1 saved it); the run is never failed and both stop
// cleanly. The failed save used to be reported as the run's failure: the coordinators failed
// the run, t0 exited 1 ("the coordinator closed the assignment stream") and every later join
// was refused. The run is endlessSteps long, so t0 cannot end it before t1 is back.
func TestVolumeFullLeavesRunGoing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)

	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	waitFor(t, cli, "t0's first steps", 2*time.Minute, func(s *fsm.State) bool { return s.Step >= 1 })
	// 2 MiB: bbolt's first growth of an empty file (1 MiB past its pages) fits, a checkpoint of
	// the test model does not.
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainer(t, limitedBinary(t, dir, bin, 2<<20), vol, "t1", listen, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(t1.log)
		t.Fatalf("t1 did not exit within 2 minutes on a volume that cannot grow; its log:\n%s\nstderr:\n%s", b, t1.stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("t1 exited with %v, want status 1; stderr:\n%s", t1.err, t1.stderr.String())
	}
	db := filepath.Join(vol, "checkpoints.db")
	// At its first save, or at the fetch of the checkpoint its first generation starts from.
	want := regexp.MustCompile(`^ddpm: trainer: this trainer's volume: (fetching checkpoint step [0-9]+: )?checkpoint: save step [0-9]+: grow ` +
		regexp.QuoteMeta(db) + `: file too large\n$`)
	if !want.MatchString(t1.stderr.String()) {
		t.Fatalf("t1's stderr %q, want one line matching %q", t1.stderr.String(), want)
	}
	left := waitFor(t, cli, "a generation without t1", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	if left.Status.Terminal() {
		t.Fatalf("the run is %s after t1's volume filled (%s)", left.Status, left.Reason)
	}
	commitIn(t, cli, "a commit by t0 alone", left.Generation.Number)

	// Room again: the same volume, no limit.
	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	backInRing(t, cli, "t1")
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
}

// TestFailedRunLineSaysWhy: a trainer process whose run the coordinators fail (another member
// reports a failure every rank would meet) exits with status 1 and one line giving the run's
// reason; it used to say only "the coordinator closed the assignment stream".
func TestFailedRunLineSaysWhy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 64, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	waitFor(t, cli, "t0 joined", time.Minute, func(s *fsm.State) bool { return s.Members["t0"] != nil })
	// tx: a member this test plays; its failure report fails the run.
	j := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "tx", Address: freeAddr(t), Version: "dev", ConfigHash: run.Hash()})
	keepAlive(t, cli, "tx", j.Incarnation)
	gen := waitFor(t, cli, "a ring of t0 and tx", 30*time.Second, func(s *fsm.State) bool {
		return s.Generation.World == 2 && s.Generation.Rank("tx") >= 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.ReportProgress(ctx, &api.ReportProgressRequest{Id: "tx", Incarnation: j.Incarnation, Generation: gen.Generation.Number,
		Failure: "trainer: training diverged: 5 consecutive steps with non-finite gradients"}); err != nil {
		t.Fatal(err)
	}
	failed := waitFor(t, cli, "the run failed", 10*time.Second, func(s *fsm.State) bool { return s.Status == fsm.StatusFailed })
	select {
	case <-t0.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("t0 did not exit within 30 s of the run's failure (log %s)", t0.log)
	}
	var ee *exec.ExitError
	want := "ddpm: trainer: the coordinator closed the assignment stream: the run has failed: " + failed.Reason + "\n"
	if !errors.As(t0.err, &ee) || ee.ExitCode() != 1 || t0.stderr.String() != want {
		t.Fatalf("t0 exited with %v, stderr %q; want status 1 and %q", t0.err, t0.stderr.String(), want)
	}
}

// TestClusterEmptyCheckpointFile: a cluster trainer whose checkpoints.db was emptied (0 bytes)
// while it was stopped starts with one warning, joins with nothing held, fetches the committed
// checkpoint its generation starts from from the other trainer, and the ring of both commits
// past it: the cluster holds the committed checkpoints, so no step is lost (a standalone trainer
// refuses such a file: TestStandaloneDamagedVolume). The run is endlessSteps long, so t0 cannot
// end it alone while t1 is stopped.
func TestClusterEmptyCheckpointFile(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	waitFor(t, cli, "a commit by the ring of two", 2*time.Minute, func(s *fsm.State) bool {
		return s.Generation.World == 2 && len(s.Checkpoints) > 0 && s.Checkpoints[len(s.Checkpoints)-1].Step > s.Generation.StartStep
	})
	stopTrainer(t, "t1", t1)
	db := filepath.Join(vol, "checkpoints.db")
	if err := os.Truncate(db, 0); err != nil {
		t.Fatal(err)
	}
	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	back := waitFor(t, cli, "t1 back in a ring of two", 2*time.Minute, func(s *fsm.State) bool {
		m := s.Members["t1"]
		return m != nil && m.State == fsm.MemberActive && s.Generation.World == 2 && s.Generation.StartStep > 0
	})
	commitIn(t, cli, "a commit by the ring of t0 and the restarted t1", back.Generation.Number)
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
	b, err := os.ReadFile(t1.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"msg":"` + MsgEmptyCheckpointFile + `"`, `"msg":"fetching checkpoint"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("t1's log has no %s (it rejoined at step %d):\n%s", want, back.Generation.StartStep, b)
		}
	}
}
