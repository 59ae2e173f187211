package coordinator

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// TestLeftoverSnapshotProbe pins why the run check before raft starts (runOnDisk) may use
// raft's snapshot store although that store's constructor creates and removes
// snapshots/permTest: a permTest left by a crash between the two is an empty file under a fixed
// name that raft's snapshot listing skips (it reads only folders), and the next start removes
// it. A replica restarted over one starts with its run, and one given another run is still
// refused with the run in its --data-dir named.
func TestLeftoverSnapshotProbe(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(r config.Run) (*Node, error) {
		addrs := freeAddrs(t, 2)
		p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
		return StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
			DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t), Run: &r})
	}
	node, err := start(run)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for inForce := false; !inForce; {
		node.Replica.View(func(s *fsm.State) { inForce = s.Run != nil })
		if time.Now().After(deadline) {
			node.Close()
			t.Fatal("run not in force within a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	node.Close()

	probe := filepath.Join(dir, "snapshots", "permTest")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	node, err = start(run)
	if err != nil {
		t.Fatalf("restart over a leftover %s: %v", probe, err)
	}
	node.Close()
	if _, err := os.Stat(probe); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after a start: %v, want it removed", probe, err)
	}

	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	other := run
	other.Steps++
	node, err = start(other)
	var conflict *RunConflictError
	if !errors.As(err, &conflict) || conflict.Where != "--data-dir "+dir || conflict.InForceHash != wireHash(run) {
		if node != nil {
			node.Close()
		}
		t.Fatalf("another run over a leftover probe: %v", err)
	}
}
