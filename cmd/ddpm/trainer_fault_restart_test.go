package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// expectNoJoin waits (2 minutes at most) for p, a trainer restarted onto the failure it left
// the run for, to exit with status and exactly the line want on stderr, having said so in its
// log (MsgFaultStillThere) without joining; then it checks that the coordinators are still in
// generation gen, of world 1 without id, and that a checkpoint past step after commits in it:
// the healthy trainer kept going.
func expectNoJoin(t *testing.T, cli *coordinator.Client, name, id string, p *trainerProc, status int, want string, gen uint64, after int64) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%s did not exit within 2 minutes; its log:\n%s\nstderr:\n%s", name, b, p.stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != status || p.stderr.String() != want {
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%s exited with %v and stderr\n%q\nwant status %d and\n%q\nits log:\n%s", name, p.err, p.stderr.String(), status, want, b)
	}
	b, _ := os.ReadFile(p.log)
	if !strings.Contains(string(b), `"msg":"`+MsgFaultStillThere+`"`) || strings.Contains(string(b), `"msg":"joining"`) {
		t.Fatalf("%s's log has no %q line, or it went on to join:\n%s", name, MsgFaultStillThere, b)
	}
	st := waitFor(t, cli, "a commit by the healthy trainer after "+name+" exited", 2*time.Minute, func(s *fsm.State) bool {
		n := len(s.Checkpoints)
		return n > 0 && s.Checkpoints[n-1].Step > after || s.Generation.Number != gen
	})
	if st.Generation.Number != gen || st.Generation.World != 1 || st.Members[id] != nil || st.Status.Terminal() {
		t.Fatalf("after %s exited: generation %d of world %d, %s a member: %v, run %s; want generation %d of world 1 without it, running",
			name, st.Generation.Number, st.Generation.World, id, st.Members[id] != nil, st.Status, gen)
	}
}

// backInRing waits (2 minutes at most) for id to be an active member of a ring of two, and for
// that ring to commit a checkpoint.
func backInRing(t *testing.T, cli *coordinator.Client, id string) {
	t.Helper()
	both := waitFor(t, cli, id+" back in a ring of two", 2*time.Minute, func(s *fsm.State) bool {
		m := s.Members[id]
		return m != nil && m.State == fsm.MemberActive && s.Generation.World == 2
	})
	if final := commitIn(t, cli, "a commit by the ring of two", both.Generation.Number); final.Status.Terminal() {
		t.Fatalf("the run is %s (%s)", final.Status, final.Reason)
	}
}

// lastCommitted is the step of st's newest committed checkpoint (0: none).
func lastCommitted(st *fsm.State) int64 {
	if n := len(st.Checkpoints); n > 0 {
		return st.Checkpoints[n-1].Step
	}
	return 0
}

// TestDamagedDataRestartDoesNotJoin: t1's copy of the run's data has one byte of its shard
// flipped; it leaves the run at its first step (exit 2, one line) and t0 goes on alone in a new
// generation. Restarted onto the same copy (as Kubernetes restarts a container), t1 reads the
// record that failed again (its shard's sha256 only) and exits with the same line, ending with how
// to join anyway, and status 2 without joining: the generation stays t0's and t0 commits on in it.
// Before, every restart joined, started a generation (sending t0 back to its last commit) and left
// it again. With the shard repaired, the restarted t1 joins and the ring of both commits; the
// record is gone.
func TestDamagedDataRestartDoesNotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0, n1)
	shard := filepath.Join(n1, "prep", "shard-00000.bin")
	good, was, now := damageShard(t, shard)

	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	want := fmt.Sprintf("ddpm: trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect prep checks every shard) and start the trainer again\n",
		filepath.Join("prep", "shard-00000.bin"), now, was)
	t1 := launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	expectDataExit(t, "t1", t1, want)
	alone := waitFor(t, cli, "a generation of t0 alone", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	alone = commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number)

	t1 = launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	again := strings.TrimSuffix(want, "\n") + "; or remove " + filepath.Join(vol, trainer.FaultFile) + " to join anyway\n"
	expectNoJoin(t, cli, "the restarted t1", "t1", t1, 2, again, alone.Generation.Number, lastCommitted(alone))
	if _, err := os.Stat(filepath.Join(vol, trainer.FaultFile)); err != nil {
		t.Fatalf("the record of t1's fault: %v", err)
	}

	// The copy repaired: the restart checks the shard again, finds it intact and joins.
	if err := os.WriteFile(shard, good, 0o644); err != nil {
		t.Fatal(err)
	}
	t1 = launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	backInRing(t, cli, "t1")
	if _, err := os.Stat(filepath.Join(vol, trainer.FaultFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record of t1's repaired fault is still there (%v)", err)
	}
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
}

// TestVolumeFullRestartDoesNotJoin: t1's volume cannot grow (a file-size limit below one
// checkpoint, as a full disk); it leaves the run (exit 1, one line) and t0 goes on alone.
// Restarted under the same limit, t1 tries one write of a save's room on its volume, which fails,
// and exits with status 1 and one line saying so (the size, the volume, the write's error, how to
// get out) without joining: the generation stays t0's and t0 commits on in it. Restarted without
// the limit (room again), t1 joins and the ring of both commits.
func TestVolumeFullRestartDoesNotJoin(t *testing.T) {
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

	// 2 MiB: bbolt's first growth of an empty file fits, a checkpoint of the test model does not.
	limited := limitedBinary(t, dir, bin, 2<<20)
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainer(t, limited, vol, "t1", listen, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(t1.log)
		t.Fatalf("t1 did not exit within 2 minutes on a volume that cannot grow; its log:\n%s\nstderr:\n%s", b, t1.stderr.String())
	}
	var ee *exec.ExitError
	line := t1.stderr.String()
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(line, "ddpm: trainer: this trainer's volume: ") || strings.Count(line, "\n") != 1 {
		t.Fatalf("t1 exited with %v and stderr %q; want status 1 and one line about its volume", t1.err, line)
	}
	alone := waitFor(t, cli, "a generation without t1", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	alone = commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number)

	rec, err := trainer.LoadFault(vol)
	if err != nil || rec == nil || rec.Kind != trainer.FaultVolume || rec.Bytes <= 2<<20 {
		t.Fatalf("t1's record: %+v, %v; want a volume fault of one save's room, over the 2 MiB limit", rec, err)
	}
	t1 = launchTrainer(t, limited, vol, "t1", listen, coord, cfg, certs)
	again := fmt.Sprintf("ddpm: trainer: this trainer's volume still cannot take one checkpoint's save: a test write of %d bytes to %s failed (write: file too large); "+
		"free space on it (or fix what the error names) and start the trainer again; or remove %s to join anyway\n", rec.Bytes, vol, filepath.Join(vol, trainer.FaultFile))
	expectNoJoin(t, cli, "the restarted t1", "t1", t1, 1, again, alone.Generation.Number, lastCommitted(alone))
	if b, _ := os.ReadFile(t1.log); !strings.Contains(string(b), `"write_check":"write `) || !strings.Contains(string(b), `: file too large"`) {
		t.Errorf("the restarted t1's log does not name the failed test write:\n%s", b)
	}

	// Room again: the test write passes and t1 joins.
	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs)
	backInRing(t, cli, "t1")
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
}

// TestFaultRecordAfterRunSucceeded: t1, alone in a run with a damaged shard, leaves it at its
// first step (exit 2) with its fault recorded; t0 then trains the run to its end. t1 restarted
// afterwards onto the same copy has nothing left to train: it ends as any trainer started after
// its run succeeded, with status 0, nothing on stderr and the "run complete" line saying the run
// finished without it (so that Kubernetes and ddpm local stop restarting it), not with the
// recorded fault's status 2 at every restart. Its record stays (the copy is still damaged).
func TestFaultRecordAfterRunSucceeded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0, n1)
	damageShard(t, filepath.Join(n1, "prep", "shard-00000.bin"))
	run, cfg := procRun(t, dir, 8, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("t1 did not exit within 2 minutes (log %s)", t1.log)
	}
	var ee *exec.ExitError
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("t1 exited with %v, want status 2; stderr:\n%s", t1.err, t1.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(vol, trainer.FaultFile)); err != nil {
		t.Fatalf("the record of t1's fault: %v", err)
	}
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	select {
	case <-t0.exited:
		if t0.err != nil {
			t.Fatalf("t0: %v\n%s", t0.err, t0.stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("t0 did not finish the run within 2 minutes (log %s)", t0.log)
	}
	waitFor(t, cli, "the run's success", 10*time.Second, func(s *fsm.State) bool { return s.Status == fsm.StatusSucceeded })

	t1 = launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(time.Minute):
		t.Fatalf("the restarted t1 did not exit within a minute (log %s)", t1.log)
	}
	logb, _ := os.ReadFile(t1.log)
	want := `"note":"trainer t1: the run finished at step 8 without this trainer; this volume holds no committed checkpoint; the final checkpoint is on t0"`
	if t1.err != nil || t1.stderr.Len() != 0 || !strings.Contains(string(logb), `"msg":"`+trainer.MsgRunComplete+`"`) || !strings.Contains(string(logb), want) {
		t.Fatalf("the restarted t1 after the run succeeded: %v, stderr %q; want status 0, nothing on stderr and %s in its log:\n%s", t1.err, t1.stderr.String(), want, logb)
	}
	if _, err := os.Stat(filepath.Join(vol, trainer.FaultFile)); err != nil {
		t.Errorf("the record of t1's fault, its copy still damaged: %v", err)
	}
}
