package coordinator

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"ddpm/api"
	"ddpm/config"
)

// TestLeaderNotInPeersS24: a replica whose data dir was emptied and that was started again with
// --bootstrap and a --peers that leaves the others out follows the real cluster's leader
// (raft keeps the bootstrap entry, of the same index and term as the cluster's), but cannot forward writes to it: a write sent to it says
// that the leader is not in its --peers and what to do. It said "no leader known to replica
// c1", while ddpm status through it named the leader.
func TestLeaderNotInPeersS24(t *testing.T) {
	a := freeAddrs(t, 7)
	peers := []Peer{{ID: "c0", RaftAddr: a[0], GRPCAddr: a[1]}, {ID: "c1", RaftAddr: a[2], GRPCAddr: a[3]},
		{ID: "c2", RaftAddr: a[4], GRPCAddr: a[5]}}
	start := func(p Peer, list []Peer) *Node {
		t.Helper()
		n, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: list,
			DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	start(peers[0], peers)
	start(peers[2], peers)
	wrong := []Peer{peers[1], {ID: "cz", RaftAddr: a[6], GRPCAddr: "127.0.0.1:1"}}
	n1 := start(peers[1], wrong)
	deadline := time.Now().Add(30 * time.Second)
	var leader string
	for leader == "" || leader == "c1" || leader == "cz" {
		if time.Now().After(deadline) {
			t.Fatalf("c1 follows no leader of the cluster within 30 s (leader %q)", leader)
		}
		time.Sleep(50 * time.Millisecond)
		leader = n1.Replica.Leader().ID
	}
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(a[3], insecureBundle(t).DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = api.NewCoordinatorClient(cc).SubmitRun(ctx, &api.SubmitRunRequest{RequestId: "s24", RunYaml: run.Marshal()})
	want := "coordinator: not the raft leader: the leader " + leader + " is not in replica c1's --peers (c1,cz): " +
		"stop c1, move its --data-dir aside and start it with the --peers of the other replicas"
	if got := status.Convert(err).Message(); got != want {
		t.Fatalf("SubmitRun through c1: %v\nwant %q", err, want)
	}
}

// TestNoLeaderKnownS24: a write to a replica that knows no leader (one of three up) says how
// many replicas raft needs; it said only "no leader known to replica c0", which a trainer
// retried without a word on why.
func TestNoLeaderKnownS24(t *testing.T) {
	a := freeAddrs(t, 6)
	peers := []Peer{{ID: "c0", RaftAddr: a[0], GRPCAddr: a[1]}, {ID: "c1", RaftAddr: a[2], GRPCAddr: a[3]},
		{ID: "c2", RaftAddr: a[4], GRPCAddr: a[5]}}
	n, err := StartNode(NodeConfig{ID: "c0", RaftAddr: a[0], GRPCAddr: a[1], Peers: peers, DataDir: t.TempDir(), Bootstrap: true,
		Version: "v1", Security: insecureBundle(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(a[1], insecureBundle(t).DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = api.NewCoordinatorClient(cc).SubmitRun(ctx, &api.SubmitRunRequest{RequestId: "s24b", RunYaml: run.Marshal()})
	want := "coordinator: not the raft leader: no leader known to replica c0 (raft elects one while a majority of the 3 replicas " +
		"in --peers are up and reach each other)"
	if got := status.Convert(err).Message(); got != want {
		t.Fatalf("SubmitRun to a lone replica: %v\nwant %q", err, want)
	}
}
