package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestTrainerVolumeBoundOnceAccepted: a hand-started cluster trainer writes its volume's
// run.yaml only once the coordinators accepted its run config. Refused for wrong run flags, or
// stopped while no coordinator answers, it leaves none, so the retry with the right flags
// trains into the same folder; a folder a refused trainer of older versions left bound to the
// wrong run (run.yaml, no checkpoint) is re-bound with one log line; a folder holding
// checkpoints of another run is refused untouched.
func TestTrainerVolumeBoundOnceAccepted(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	runA, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	runA.Steps, runA.CheckpointEvery, runA.GlobalBatch, runA.T, runA.MinTrainers = 4, 4, 8, 50, 1
	runB := runA
	runB.Seed = runA.Seed + 1
	dir := t.TempDir()
	cfgA, cfgB := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	for p, r := range map[string]config.Run{cfgA: runA, cfgB: runB} {
		if err := os.WriteFile(p, r.Marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	certs := tlsauthtest.Dir(t)
	grpcAddr, cli := startReplica(t, runA, "dev", certs)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for st, err := cli.State(ctx); err != nil || st.Run == nil; st, err = cli.State(ctx) {
		if ctx.Err() != nil {
			t.Fatal("the coordinator never had its run config")
		}
		time.Sleep(50 * time.Millisecond)
	}
	trainerCmd := func(coord, vol, cfg string) (*exec.Cmd, *testutil.SyncBuffer, *bytes.Buffer) {
		cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t0", "--coordinator", coord, "--listen", freeAddr(t),
			"--data-dir", vol, "--config", cfg, "--certs", certs)
		var out testutil.SyncBuffer
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		return cmd, &out, &stderr
	}
	yamlHash := func(vol string) string {
		p := filepath.Join(vol, trainer.ConfigFile)
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return "none"
		}
		r, err := config.Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return r.Hash()
	}

	// Wrong run flags: refused by the coordinators; the volume gets no run.yaml.
	t0 := filepath.Join(dir, "t0")
	cmd, out, stderr := trainerCmd(grpcAddr, t0, cfgB)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.HasPrefix(stderr.String(), "ddpm: joining ["+grpcAddr+"]: ") || strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("trainer with the wrong run flags: %v, stderr %q (want exit 2, one joining line)\n%s", err, stderr, out)
	}
	if h := yamlHash(t0); h != "none" {
		t.Fatalf("the refused trainer bound %s to config %.12s", t0, h)
	}
	mustNotExist(t, t0) // nor left the folder it made (TestTrainerS26WrongCoordinatorLeavesNothing)

	// No coordinator answers: stopped while joining, it leaves no run.yaml either.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	u0 := filepath.Join(dir, "u0")
	cmd, out, _ = trainerCmd(dead, u0, cfgA)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), `"msg":"joining"`) {
		if ctx.Err() != nil {
			t.Fatalf("the trainer never started joining:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("trainer stopped while joining: %v\n%s", err, out)
	}
	if h := yamlHash(u0); h != "none" {
		t.Fatalf("the trainer that never joined bound %s to config %.12s", u0, h)
	}

	// A volume left bound to the wrong run without a checkpoint (as older versions left t0):
	// the right run re-binds it, says so once, and trains into it.
	if err := os.MkdirAll(t0, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(t0, trainer.ConfigFile), runB.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd, out, stderr = trainerCmd(grpcAddr, t0, cfgA)
	if err := cmd.Run(); err != nil || stderr.Len() != 0 {
		t.Fatalf("trainer with the right run flags: %v, stderr %q\n%s", err, stderr, out)
	}
	rebound := fmt.Sprintf(`"msg":"volume re-bound to this run: its run.yaml named another run and it holds no checkpoint","trainer":"t0","data_dir":%q,"old_config":%q,"config":%q}`, t0, runB.Hash(), runA.Hash())
	if strings.Count(out.String(), rebound) != 1 || !strings.Contains(out.String(), `"msg":"`+trainer.MsgRunComplete+`"`) {
		t.Fatalf("want one line ending %s and the run complete:\n%s", rebound, out)
	}
	if h := yamlHash(t0); h != runA.Hash() {
		t.Fatalf("%s bound to config %.12s, want the run's %.12s", t0, h, runA.Hash())
	}

	// Now t0 holds checkpoints of run A: another run is refused, and nothing in t0 changes.
	before := tree(t, t0)
	cmd, out, stderr = trainerCmd(grpcAddr, t0, cfgB)
	err = cmd.Run()
	want := fmt.Sprintf("ddpm: --data-dir %s holds checkpoints of a different run (config %.12s, this run %.12s); use another folder\n", t0, runA.Hash(), runB.Hash())
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
		t.Fatalf("another run on a volume with checkpoints: %v, stderr %q, want exit 2 and %q\n%s", err, stderr, want, out)
	}
	if after := tree(t, t0); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("the refused trainer changed %s:\nbefore %q\nafter  %q", t0, before, after)
	}
}
