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
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// initGoneLine is the one line of a cluster trainer refused before it joins because its --init
// file gone is missing and the run has no committed checkpoint (checkInitBeforeJoin).
func initGoneLine(gone string) string {
	return fmt.Sprintf("ddpm: trainer: --init %s does not exist; the run has no committed checkpoint, so its generations start at step 0 from these weights: "+
		"put the run's weights there (the file the other trainers started from), or start the trainers the run waits for with them (once it has a committed checkpoint this one needs none), "+
		"and start the trainer again; it has not joined the run\n", gone)
}

// expectInitGoneRefusal waits (a minute at most) for p to exit with status 2 and exactly
// initGoneLine(gone) on stderr, its log saying MsgInitGoneFreshRun and not that it was joining.
func expectInitGoneRefusal(t *testing.T, name string, p *trainerProc, gone string) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%s did not exit within a minute; its log:\n%s\nstderr:\n%s", name, b, p.stderr.String())
	}
	want := initGoneLine(gone)
	var ee *exec.ExitError
	b, _ := os.ReadFile(p.log)
	if !errors.As(p.err, &ee) || ee.ExitCode() != 2 || p.stderr.String() != want {
		t.Fatalf("%s exited with %v and stderr\n%q\nwant status 2 and\n%q\nits log:\n%s", name, p.err, p.stderr.String(), want, b)
	}
	if !strings.Contains(string(b), `"msg":"`+MsgInitGoneFreshRun+`"`) || strings.Contains(string(b), `"msg":"joining"`) {
		t.Fatalf("%s's log has no %q line, or it went on to join:\n%s", name, MsgInitGoneFreshRun, b)
	}
	// Nor the line of a trainer that goes on without the weights (review T4).
	if strings.Contains(string(b), `"msg":"`+MsgInitGoneResumes+`"`) {
		t.Fatalf("%s's log says it resumes without the weights before refusing:\n%s", name, b)
	}
}

// TestFreshRunInitGoneDoesNotJoin: a fresh run (no checkpoint committed during the test: one
// every 500,000 steps) of 2 to 3 trainers started from --init weights. t0 waits for a second
// trainer; t1, started with the same flags on a node where the --init file is missing, asks the
// coordinators' state before it joins and exits with status 2 and one line naming the file and
// what to do, without joining: the coordinators' generation is the one t0 waits in (same number,
// world 0), t1 no member. Before, t1's join started a generation of two at step 0, whose load
// failed on t1 (trainer.ErrInitGone, exit 2), and its leave another: each start of t1 cost the
// run two generations. t2, given the weights, then forms the ring with t0, and t1 started again
// while they train waits for their first committed checkpoint without joining (one
// MsgInitGoneWaitsCommit line; stop 25: it was refused the same way), their generation unchanged
// and training on; SIGTERM ends its wait (status 0, "left before joining").
func TestFreshRunInitGoneDoesNotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	w := demoWeightsIn(t, dir)
	run, cfg := procRun(t, dir, endlessSteps, 2, 3, 2*time.Second, func(r *config.Run) { r.CheckpointEvery = endlessSteps / 2 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainer(t, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs, "--init", w)
	waiting := waitFor(t, cli, "t0 waiting for a second trainer", time.Minute, func(s *fsm.State) bool {
		return s.Members["t0"] != nil && s.Generation.World == 0
	})

	gone := filepath.Join(dir, "gone.safetensors") // this node's copy of the weights is missing
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs, "--init", gone)
	expectInitGoneRefusal(t, "t1", t1, gone)
	st := waitFor(t, cli, "the state after t1 exited", 10*time.Second, func(*fsm.State) bool { return true })
	if st.Generation.Number != waiting.Generation.Number || st.Generation.World != 0 || st.Members["t1"] != nil || st.Status.Terminal() {
		t.Fatalf("after t1 exited: generation %d of world %d, t1 a member: %v, run %s; want generation %d of world 0 (t0 waiting), without t1",
			st.Generation.Number, st.Generation.World, st.Members["t1"] != nil, st.Status, waiting.Generation.Number)
	}
	if _, err := os.Stat(filepath.Join(vol, "run.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused t1 bound its volume (run.yaml: %v)", err)
	}

	t2 := launchTrainer(t, bin, filepath.Join(dir, "t2-vol"), "t2", freeAddr(t), coord, cfg, certs, "--init", w)
	ring := waitFor(t, cli, "steps of the ring of t0 and t2", 2*time.Minute, func(s *fsm.State) bool {
		return s.Generation.World == 2 && s.Generation.Rank("t0") >= 0 && s.Generation.Rank("t2") >= 0 && s.Step >= 2
	})
	t1 = launchTrainer(t, bin, vol, "t1", listen, coord, cfg, certs, "--init", gone)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(t1.log)
		if strings.Contains(string(b), `"level":"INFO","msg":"`+MsgInitGoneWaitsCommit+`"`) {
			break
		}
		select {
		case <-t1.exited:
			t.Fatalf("the restarted t1 exited (%v) instead of waiting for the first commit; stderr:\n%s", t1.err, t1.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted t1 logged no %q within a minute:\n%s", MsgInitGoneWaitsCommit, b)
		}
	}
	at := waitFor(t, cli, "the state while t1 waits", 10*time.Second, func(*fsm.State) bool { return true }).Step
	after := waitFor(t, cli, "4 more steps of t0 and t2", 2*time.Minute, func(s *fsm.State) bool {
		return s.Step >= at+4 || s.Generation.Number != ring.Generation.Number
	})
	if after.Generation.Number != ring.Generation.Number || after.Members["t1"] != nil || after.Status.Terminal() {
		t.Fatalf("while the restarted t1 waits: generation %d of world %d, t1 a member: %v, run %s; want the ring's generation %d, running",
			after.Generation.Number, after.Generation.World, after.Members["t1"] != nil, after.Status, ring.Generation.Number)
	}
	stopTrainer(t, "t1", t1)
	if b, _ := os.ReadFile(t1.log); !strings.Contains(string(b), `"msg":"left before joining"`) || strings.Contains(string(b), `"msg":"joining"`) {
		t.Fatalf("the restarted t1 joined, or did not say it left before joining:\n%s", b)
	}
	stopTrainer(t, "t2", t2)
	stopTrainer(t, "t0", t0)
}

// TestRolledBackToZeroInitGoneDoesNotJoin: t0 trains a run from --init weights (min_trainers 1)
// until it has committed checkpoints, and is stopped; the run is rolled back to step 0 (ddpm
// checkpoint rollback --to-step 0 --yes), which abandons every checkpoint t0's volume holds, and
// the weights file is moved away. t0 started again with the same flags asks the coordinators'
// state before it joins: its checkpoints are abandoned ones, so the run would start it at step 0
// from the weights; it exits with status 2 and the one line, without joining (the generation the
// rollback left, of world 0, unchanged). Before, the checkpoints it held let it join, and its
// step-0 generation failed at once with trainer.ErrInitGone (found by the reviewer).
func TestRolledBackToZeroInitGoneDoesNotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	w := demoWeightsIn(t, dir)
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	vol, listen := filepath.Join(dir, "t0-vol"), freeAddr(t)
	t0 := launchTrainer(t, bin, vol, "t0", listen, coord, cfg, certs, "--init", w)
	waitFor(t, cli, "two commits", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) >= 2 })
	stopTrainer(t, "t0", t0)
	if out, err := exec.Command(bin, "checkpoint", "rollback", "--coordinator", coord, "--certs", certs, "--to-step", "0", "--yes").CombinedOutput(); err != nil {
		t.Fatalf("rollback to step 0: %v\n%s", err, out)
	}
	back := waitFor(t, cli, "the rollback to step 0", 30*time.Second, func(s *fsm.State) bool {
		return len(s.Checkpoints) == 0 && s.Generation.World == 0 && len(s.Abandoned) >= 2
	})
	gone := filepath.Join(dir, "moved.safetensors")
	if err := os.Rename(w, gone); err != nil {
		t.Fatal(err)
	}
	t0 = launchTrainer(t, bin, vol, "t0", listen, coord, cfg, certs, "--init", w)
	expectInitGoneRefusal(t, "the restarted t0", t0, w)
	st := waitFor(t, cli, "the state after t0 exited", 10*time.Second, func(*fsm.State) bool { return true })
	if st.Generation.Number != back.Generation.Number || st.Generation.World != 0 || st.Members["t0"] != nil || st.Status.Terminal() {
		t.Fatalf("after t0 exited: generation %d of world %d, t0 a member: %v, run %s; want the rollback's generation %d of world 0, without t0",
			st.Generation.Number, st.Generation.World, st.Members["t0"] != nil, st.Status, back.Generation.Number)
	}
}
