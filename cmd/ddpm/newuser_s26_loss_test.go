package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestNewUserS26LossFollowRunStops: ddpm loss RUN --follow of a ddpm local run folder whose
// coordinator answers and then goes away (the run stopped) ends, once none has answered for
// --timeout, with the stopped run's line: not running, where its loss history is, and --resume,
// exit 1. It ended with "nothing listens at ADDR ... (--coordinator takes a coordinator's
// --grpc-addr)", naming a flag the command line did not give.
func TestNewUserS26LossFollowRunStops(t *testing.T) {
	dir, grpc := stoppedRunFixture(t)
	man, err := localrun.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	raft := localrun.Addr(man.CoordinatorPorts[0].Raft)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raft, GRPCAddr: grpc,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raft, GRPCAddr: grpc}}, DataDir: t.TempDir(),
		Bootstrap: true, Version: "test", Security: tlsauthtest.Load(t, filepath.Join(dir, localrun.CertsDir), nil)})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			node.Close()
		}
	})
	cmd := exec.Command(testutil.DDPMBinary(t), "loss", dir, "--follow", "--every", "100ms", "--timeout", "2s")
	var stdout, stderr lockedLog
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// The follower has had its answer once it prints that no loss is reported yet.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(stdout.String(), "no loss reported yet"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ddpm loss --follow printed no answer within a minute:\n%s%s", stdout.String(), stderr.String())
		}
	}
	node.Close()
	closed = true
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(time.Minute): // bounds a hang only: --timeout is 2 s
		t.Fatalf("ddpm loss --follow still running a minute after its coordinator stopped:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.Fatal(werr)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	want := "ddpm: loss: the ddpm local run " + dir + " is not running (nothing listens at its coordinators " + grpc + "): it has no loss history yet (no " +
		filepath.Join(dir, localrun.LossCSV) + "); ddpm local --resume " + dir + " starts it again"
	if code := cmd.ProcessState.ExitCode(); code != 1 || lines[len(lines)-1] != want {
		t.Errorf("exit %d, last line %q\nwant exit 1 and %q\n%s", code, lines[len(lines)-1], want, stderr.String())
	}
}
