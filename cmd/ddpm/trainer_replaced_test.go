package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// trainerProc is one `ddpm trainer` process of a test: its JSON log goes to a file, its stderr
// (where an error ends it with one line) to a buffer.
type trainerProc struct {
	cmd    *exec.Cmd
	listen string
	log    string
	stderr bytes.Buffer
	exited chan struct{} // closed when the process has exited, with err its Wait result
	err    error
}

// startTrainerProc starts `ddpm trainer --id id` against the coordinator at coord with the run
// config file cfg and the certificate directory certs, on a fresh --listen address and volume
// under dir; the test's end kills it if it still runs.
func startTrainerProc(t *testing.T, bin, dir, id, coord, cfg, certs string) *trainerProc {
	t.Helper()
	listen := freeAddr(t)
	return launchTrainer(t, bin, filepath.Join(dir, fmt.Sprintf("%s-%s", id, filepath.Base(listen))), id, listen, coord, cfg, certs)
}

// launchTrainer starts `ddpm trainer --id id --listen listen --data-dir vol` (vol may hold
// checkpoints already) with the run config cfg and the TLS material certs, plus extra flags; its
// stdout goes to vol.log. The test's end kills it (SIGCONTed first, in case it was stopped).
func launchTrainer(t *testing.T, bin, vol, id, listen, coord, cfg, certs string, extra ...string) *trainerProc {
	t.Helper()
	return launchTrainerIn(t, "", bin, vol, id, listen, coord, cfg, certs, extra...)
}

// launchTrainerIn is launchTrainer with the process's working directory wd ("": the test's): a
// run config's relative dataset path is then read there, as on a node of its own.
func launchTrainerIn(t *testing.T, wd, bin, vol, id, listen, coord, cfg, certs string, extra ...string) *trainerProc {
	t.Helper()
	p := &trainerProc{listen: listen, exited: make(chan struct{}), log: vol + ".log"}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"trainer", "--id", id, "--coordinator", coord, "--listen", listen,
		"--data-dir", vol, "--config", cfg, "--certs", certs}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = wd
	p.cmd.Stdout, p.cmd.Stderr = f, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitFor polls the replicated state until cond holds, failing the test after limit.
func waitFor(t *testing.T, cli *coordinator.Client, what string, limit time.Duration, cond func(*fsm.State) bool) *fsm.State {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.State(ctx)
		cancel()
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v (last state error %v)", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStalledTrainerReplacedExits: trainer t1 is SIGSTOPped past the heartbeat timeout and
// dropped; a new process joins with --id t1 from another address and the run goes on with it.
// When the old process is SIGCONTed it is refused as a stale incarnation of t1 and exits with
// one line (status 3) without touching the run, which completes with the newcomer. It used to
// resume heartbeating and reporting as t1, the newcomer's id, and take rank 1 of the newcomer's
// ring.
func TestStalledTrainerReplacedExits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 24, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)

	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	old := startTrainerProc(t, bin, dir, "t1", coord, cfg, certs)
	first := waitFor(t, cli, "steps of the 2-trainer ring", 3*time.Minute, func(s *fsm.State) bool {
		m := s.Members["t1"]
		return s.Generation.World == 2 && m != nil && m.Address == old.listen && s.Step >= 4
	})
	oldInc := first.Members["t1"].Incarnation

	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cli, "drop of the stopped t1", 30*time.Second, func(s *fsm.State) bool { return s.Members["t1"] == nil })
	repl := startTrainerProc(t, bin, dir, "t1", coord, cfg, certs)
	joined := waitFor(t, cli, "ring with the new t1", time.Minute, func(s *fsm.State) bool {
		m := s.Members["t1"]
		return m != nil && m.Address == repl.listen && m.State == fsm.MemberActive && s.Generation.World == 2
	})
	newInc := joined.Members["t1"].Incarnation
	if newInc <= oldInc {
		t.Fatalf("the new t1 is incarnation %d, the old one was %d", newInc, oldInc)
	}

	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expectReplaced(t, old, repl.listen, newInc)
	final := finishWith(t, cli, run, t0, repl)
	if m := final.Members["t1"]; m == nil || m.Incarnation != newInc || m.Address != repl.listen {
		t.Fatalf("t1 at the end: %+v, want incarnation %d at %s", m, newInc, repl.listen)
	}
	for _, ev := range final.Events {
		if ev.Kind == "join" && ev.Time > joined.Events[len(joined.Events)-1].Time && ev.Text == "trainer t1 rejoined from "+old.listen {
			t.Fatalf("the old t1 joined again: %v", ev)
		}
	}
}

// procRun writes DIR/run.yaml for the trainer-process tests: the mnist preset's tiny U-Net cut
// to a short run (global batch 8, T = 50, a checkpoint every 4 steps, warmup 2, betas 0.002-0.4)
// of the given steps, trainer bounds and heartbeat timeout, then edit (if any) applied. It returns
// the run and the file's path.
func procRun(t *testing.T, dir string, steps int64, minTrainers, maxTrainers int, heartbeat time.Duration, edit func(*config.Run)) (config.Run, string) {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.GlobalBatch, run.T = steps, 4, 8, 50
	run.WarmupSteps, run.BetaStart, run.BetaEnd = 2, 0.002, 0.4
	run.MinTrainers, run.MaxTrainers, run.HeartbeatTimeout = minTrainers, maxTrainers, config.Duration(heartbeat)
	if edit != nil {
		edit(&run)
	}
	cfg := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfg, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	return run, cfg
}

// expectReplaced waits (30 s at most) for the SIGCONTed old process of t1 to exit with status 3
// and exactly the one line naming its replacement at addr with incarnation inc.
func expectReplaced(t *testing.T, old *trainerProc, addr string, inc uint64) {
	t.Helper()
	select {
	case <-old.exited:
		var ee *exec.ExitError
		if !errors.As(old.err, &ee) || ee.ExitCode() != exitReplaced {
			t.Fatalf("old t1 exited with %v, want status %d; stderr:\n%s", old.err, exitReplaced, old.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the old t1 did not exit within 30 s of SIGCONT; stderr:\n%s", old.stderr.String())
	}
	want := fmt.Sprintf("ddpm: trainer t1: replaced by a newer process at %s (incarnation %d); exiting\n", addr, inc)
	if got := old.stderr.String(); got != want {
		t.Fatalf("old t1's stderr %q, want %q", got, want)
	}
}

// finishWith waits for t0 and the new t1 to exit cleanly (3 minutes at most) and for the run to
// succeed at its last step, and returns the coordinators' final state.
func finishWith(t *testing.T, cli *coordinator.Client, run config.Run, t0, repl *trainerProc) *fsm.State {
	t.Helper()
	return finishProcs(t, cli, run, map[string]*trainerProc{"t0": t0, "new t1": repl})
}

// finishProcs is finishWith for the trainers procs names.
func finishProcs(t *testing.T, cli *coordinator.Client, run config.Run, procs map[string]*trainerProc) *fsm.State {
	t.Helper()
	for name, p := range procs {
		select {
		case <-p.exited:
			if p.err != nil {
				t.Fatalf("%s: %v; stderr:\n%s", name, p.err, p.stderr.String())
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s did not finish the run within 3 minutes (log %s)", name, p.log)
		}
	}
	final := waitFor(t, cli, "run success", 10*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if final.Status != fsm.StatusSucceeded || final.Step != run.Steps {
		t.Fatalf("run %s at step %d (%s), want succeeded at %d", final.Status, final.Step, final.Reason, run.Steps)
	}
	return final
}
