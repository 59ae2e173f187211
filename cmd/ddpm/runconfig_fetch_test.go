package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerRunConfigFromCoordinator: a cluster trainer given neither --config nor --preset
// (ddpm trainer --coordinator A --listen B --data-dir D, the documented start) takes the run
// config of a real coordinator over gRPC with mutual TLS, exactly (same hash), and the
// run-config flags given override its fields.
func TestTrainerRunConfigFromCoordinator(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.Seed = 40, 10, 3
	certs := tlsauthtest.Dir(t)
	addr, _ := startReplica(t, run, "test", certs)
	resolve := func(args ...string) (config.Run, error) {
		fs := pflag.NewFlagSet("trainer", pflag.ContinueOnError)
		rf := config.AddFlags(fs)
		o := trainerOpts{coordinator: addr, sec: tlsauth.AddFlags(fs)}
		if err := fs.Parse(append([]string{"--certs", certs}, args...)); err != nil {
			t.Fatal(err)
		}
		r, err := rf.Resolve()
		if err == nil {
			t.Fatalf("Resolve without --config or --preset: %+v", r)
		}
		return runFromCoordinator(context.Background(), rf, o)
	}
	got, err := resolve()
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != run.Hash() {
		t.Errorf("fetched config %.12s, the coordinator's %.12s: %+v", got.Hash(), run.Hash(), got)
	}
	got, err = resolve("--seed", "7")
	if err != nil {
		t.Fatal(err)
	}
	if want := run; got.Seed != 7 || got.Steps != want.Steps {
		t.Errorf("--seed 7 over the coordinator's config: %+v", got)
	}
}

// closedAddr is a loopback address nothing listens at: a port the kernel gave and took back.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestTrainerNoCoordinatorAnswers: ddpm trainer given neither --config nor --preset, with no
// coordinator listening at any --coordinator address, ends after the wait with one line naming
// the addresses and what to do, status 1, and nothing in --data-dir (it is not even created).
func TestTrainerNoCoordinatorAnswers(t *testing.T) {
	defer func(d time.Duration) { runConfigWait = d }(runConfigWait)
	runConfigWait = 500 * time.Millisecond
	a, b := closedAddr(t), closedAddr(t)
	vol := filepath.Join(t.TempDir(), "vol")
	cmd := newTrainerCmd()
	cmd.SetArgs([]string{"--coordinator", a + "," + b, "--listen", "127.0.0.1:7001", "--data-dir", vol, "--insecure"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	start := time.Now()
	err := cmd.ExecuteContext(context.Background())
	want := "no run config: neither --config nor --preset was given, and no coordinator answered at " + a + "," + b +
		" within 500ms: nothing listens at that address (coordinator down or not started yet?); give --config FILE or --preset NAME, or check --coordinator"
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || err.Error() != want {
		t.Fatalf("got %v, want exit 1 %q", err, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v with a wait of 500ms", d)
	}
	if _, err := os.Stat(vol); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--data-dir %s: %v, want it not created", vol, err)
	}
}

// TestTrainerInterruptedWaitingForRunConfig: SIGINT to a real ddpm trainer process waiting for
// the coordinators' run config (the one --coordinator accepts connections and never answers; the
// wait is the full 30 s) ends it at once with one line, status 130, and nothing in --data-dir.
func TestTrainerInterruptedWaitingForRunConfig(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	// The trainer asks for the run config only once its signal handler is set: its first
	// connection says it is waiting. A SIGINT before that (a fixed second was not always
	// enough for a process start under load) kills it with Go's default, not status 130.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	asked := make(chan struct{})
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if conns = append(conns, c); len(conns) == 1 {
				close(asked)
			}
		}
	}()
	a := l.Addr().String()
	vol := filepath.Join(t.TempDir(), "vol")
	var stderr bytes.Buffer
	p := exec.Command(bin, "trainer", "--coordinator", a, "--listen", "127.0.0.1:7001", "--data-dir", vol, "--insecure")
	p.Stderr = &stderr
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Process.Kill()
	select {
	case <-asked:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the trainer did not ask %s for the run config within 2 minutes", a)
	}
	start := time.Now()
	if err := p.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = p.Wait()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("exited %v after SIGINT", d)
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) || xe.ExitCode() != exitInterrupted {
		t.Errorf("exit: %v, want status %d", err, exitInterrupted)
	}
	want := "ddpm: trainer interrupted while waiting for the run config of the coordinators at " + a + "; nothing was written\n"
	if stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
	if _, err := os.Stat(vol); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--data-dir %s: %v, want it not created", vol, err)
	}
}
