package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// TestCoordinatorRestartTestSplitRun: a replica whose data dir holds a run on mnist:test (one an
// older version accepted) restarts with that run's flags and serves it; the test-split refusal
// (TestTrainerStandaloneDataset) is for a new run. It exited 2 ('names the test split'), and
// the run lost the replica for good.
func TestCoordinatorRestartTestSplitRun(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	flags := []string{"--dataset", "mnist:test", "--preset", "mnist", "--steps", "20", "--checkpoint-every", "10"}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	rf := config.AddFlags(fs)
	if err := fs.Parse(flags); err != nil {
		t.Fatal(err)
	}
	run, err := rf.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "c0")
	raftAddr, grpcAddr := freeAddr(t), freeAddr(t)
	peer := coordinator.Peer{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{peer}, DataDir: dir, Bootstrap: true, Run: &run, Version: "old", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for inForce := false; !inForce; time.Sleep(10 * time.Millisecond) {
		node.Replica.View(func(s *fsm.State) { inForce = s.Run != nil })
		if time.Now().After(deadline) {
			node.Close()
			t.Fatal("run not in force within a minute")
		}
	}
	// While another coordinator holds the data dir, that is what a second one on it is told
	// (exit 2, a replica started twice), not that the run names the test split.
	args := append([]string{"coordinator", "--id", "c0", "--raft-addr", raftAddr, "--grpc-addr", grpcAddr,
		"--peers", "c0=" + raftAddr + "=" + grpcAddr, "--data-dir", dir, "--insecure"}, flags...)
	busy, err := exec.Command(bin, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if code != 2 || !bytes.Contains(busy, []byte(filepath.Join(dir, "raft.db")+" is in use by ")) {
		node.Close()
		t.Fatalf("ddpm coordinator on a data dir in use: exit %d (%v)\n%s\nwant exit 2, in use", code, err, busy)
	}
	node.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ddpm coordinator restarted on its mnist:test run exited: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("the restarted replica did not serve its run within a minute\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.State(sctx)
		scancel()
		if err == nil && st.Run != nil {
			if st.Run.Dataset != "mnist:test" || st.ConfigHash != run.Hash() {
				t.Fatalf("restarted replica serves dataset %q config %.12s, want mnist:test %.12s", st.Run.Dataset, st.ConfigHash, run.Hash())
			}
			return
		}
	}
}
