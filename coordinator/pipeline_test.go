package coordinator

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReplicationUnpipelined: a node's raft transport offers no pipelined replication
// (hashicorp/raft's pipeline wedges on a follower that answers Success=false, as one whose
// raft.db cannot store entries does: the leader never replicated to it again and hung in its
// shutdown), and a follower whose raft.db refused 60 entries catches up with its leader once the
// writes succeed again, every node then closing within seconds. Three real replicas on loopback.
func TestReplicationUnpipelined(t *testing.T) {
	addrs := freeAddrs(t, 6)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{ID: "n" + strconv.Itoa(i), RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
	}
	var nodes []*Node
	for _, p := range peers {
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers,
			DataDir: filepath.Join(t.TempDir(), p.ID), Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, node)
	}
	closeAll := func() {
		for _, n := range nodes {
			done := make(chan struct{})
			go func() { n.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("Close of %s hangs", n.cfg.ID)
			}
		}
	}
	defer closeAll()
	if _, err := nodes[0].trans.AppendEntriesPipeline(raft.ServerID(peers[1].ID), raft.ServerAddress(peers[1].RaftAddr)); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("AppendEntriesPipeline: %v, want raft.ErrPipelineReplicationNotSupported", err)
	}
	leader := -1
	for deadline := time.Now().Add(time.Minute); leader < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		for i, n := range nodes {
			if n.Replica.IsLeader() {
				leader = i
			}
		}
	}
	apply := func(k int) {
		t.Helper()
		for range k {
			if err := nodes[leader].Replica.Raft().Apply([]byte("entry"), 5*time.Second).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := (leader + 1) % 3
	apply(5)
	dbPath := filepath.Join(nodes[f].cfg.DataDir, "raft.db")
	breakWrites(t, dbPath)
	apply(60) // committed by the leader and the third replica; f answers each append with a failure
	if nodes[f].store.Failing() == nil {
		t.Fatal("f's store took the entries with its descriptor read-only")
	}
	restoreWrites(t, dbPath)
	apply(5)
	want := nodes[leader].Replica.Raft().AppliedIndex()
	for deadline := time.Now().Add(time.Minute); nodes[f].Replica.Raft().AppliedIndex() < want; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("f applied %d, its leader %d: replication to it stopped", nodes[f].Replica.Raft().AppliedIndex(), want)
		}
	}
	if err := nodes[f].store.Failing(); err != nil {
		t.Fatalf("f's store still failing after catching up: %v", err)
	}
}
