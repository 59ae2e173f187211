package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/internal/viz"
)

// TestLossFollowThroughRestart: `ddpm loss --follow` keeps following while the only coordinator
// is down for 2 s and restarted on its data directory (a replica killed and brought back, as
// `ddpm local` does); it ends when the run does, with every point. Since a refused connection
// fails a read within about a second, it used to end there with "nothing listens at ...".
func TestLossFollowThroughRestart(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery = 20, 10
	monitorCerts = tlsauthtest.Dir(t)
	sec := tlsauthtest.Load(t, monitorCerts, nil)
	grpcAddr, raftAddr, dataDir := freeAddr(t), freeAddr(t), t.TempDir()
	start := func() (*coordinator.Node, *coordinator.Client) {
		t.Helper()
		node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
			Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: dataDir,
			Bootstrap: true, Run: &run, Version: "test", Security: sec})
		if err != nil {
			t.Fatal(err)
		}
		cli, err := coordinator.Dial([]string{grpcAddr}, sec)
		if err != nil {
			t.Fatal(err)
		}
		return node, cli
	}
	node, cli := start()
	joined := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test", ConfigHash: run.Hash()})
	report(t, cli, joined.Generation, 1, 5)

	csvPath := filepath.Join(t.TempDir(), "loss.csv")
	done := followLoss(t, grpcAddr, csvPath, 5)
	cli.Close()
	node.Close()
	select {
	case r := <-done:
		t.Fatalf("ddpm loss --follow ended while the coordinator was down: %v\n%s", r.err, r.out)
	case <-time.After(2 * time.Second):
	}
	node, cli = start()
	defer node.Close()
	defer cli.Close()
	gen := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test", ConfigHash: run.Hash()}).Generation
	report(t, cli, gen, 6, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "trainer-a", Generation: gen, Step: 20,
		Sha256: strings.Repeat("ab", 32), Size: 1024}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.out)
		}
		if !strings.HasSuffix(r.out, "20 points up to step 20 written\nrun succeeded\n") {
			t.Errorf("output:\n%s", r.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ddpm loss --follow did not return after the run ended")
	}
	if pts, err := viz.ReadLossCSV(csvPath); err != nil || len(pts) != 20 {
		t.Fatalf("final csv: %d points, %v", len(pts), err)
	}
}

// TestLossEveryWithoutFollow: --every only sets --follow's polling period; alone it is refused.
func TestLossEveryWithoutFollow(t *testing.T) {
	_, err := runDDPM(t, "loss", "--coordinator", "127.0.0.1:1", "--insecure", "--every", "1s")
	if err == nil || err.Error() != "loss: --every 1s is the polling period of --follow; without --follow the history is read once" {
		t.Fatalf("err = %v", err)
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 {
		t.Fatalf("exit status of %v: want 2", err)
	}
}
