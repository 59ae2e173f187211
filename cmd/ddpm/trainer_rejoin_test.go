package main

import (
	"path/filepath"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestRejoinOffersVolumeNow: a trainer process started on an empty volume trains past a few
// commits; its only coordinator then loses all its data (closed, restarted at the same addresses
// on an empty --data-dir). The trainer's next heartbeat is refused as unknown, it joins again, and
// the rebuilt cluster adopts the newest committed checkpoint its volume holds NOW and goes on from
// there to the end of the run. The rejoin used to offer the list the volume held at start-up
// (nothing), so the rebuilt cluster restarted the run from step 0 and the trainer, whose volume
// still had those steps committed, could not store them again.
func TestRejoinOffersVolumeNow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 32, 1, 1, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	sec := tlsauthtest.Load(t, certs, nil)
	grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
	start := func(dataDir string) *coordinator.Node {
		t.Helper()
		node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
			Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: dataDir,
			Bootstrap: true, Run: &run, Version: "dev", Security: sec})
		if err != nil {
			t.Fatal(err)
		}
		return node
	}
	node := start(filepath.Join(dir, "coord-a"))
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	tr := startTrainerProc(t, bin, dir, "t0", grpcAddr, cfg, certs)
	before := waitFor(t, cli, "two commits", 3*time.Minute, func(s *fsm.State) bool {
		return len(s.Checkpoints) >= 2 && s.Checkpoints[len(s.Checkpoints)-1].Step >= 8
	})
	if before.Status.Terminal() {
		t.Fatalf("the run ended before the coordinator could lose its data: %s", before.Status)
	}
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	// The trainer marks a commit on its volume when it hears of it (within a step or two): the
	// commit before the newest is marked for sure.
	lost := before.Checkpoints[len(before.Checkpoints)-2].Step
	node = start(filepath.Join(dir, "coord-b")) // every record of the run is gone
	t.Cleanup(func() { node.Close() })

	adopted := waitFor(t, cli, "a generation of the rebuilt cluster", time.Minute, func(s *fsm.State) bool {
		return s.Generation.World == 1
	})
	if adopted.Generation.StartStep < lost {
		t.Fatalf("the rebuilt cluster started from step %d; the trainer's volume held step %d committed (events: %v)",
			adopted.Generation.StartStep, lost, adopted.Events)
	}
	select {
	case <-tr.exited:
		if tr.err != nil {
			t.Fatalf("t0: %v; stderr:\n%s", tr.err, tr.stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("t0 did not finish the run within 3 minutes (log %s)", tr.log)
	}
	final := waitFor(t, cli, "run success", 10*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if final.Status != fsm.StatusSucceeded || final.Step != run.Steps {
		t.Fatalf("run %s at step %d (%s), want succeeded at %d", final.Status, final.Step, final.Reason, run.Steps)
	}
}
