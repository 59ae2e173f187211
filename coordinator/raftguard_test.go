package coordinator

import (
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestRaftAcceptBoundsUnauthenticated floods a real replica's raft port (mutual TLS + join
// secret) with 200 TCP connections that send nothing: its raft layer (tlsauth.RaftLayer, whose
// own tests check which connections it closes) keeps exactly MaxRaftPending of them, closes the
// other 136 and says so in one warning line on the replica's logger. While the flood goes on (a
// new idle connection every 5 ms, the bound always full), a second replica whose election
// timeout is the shorter one must win the election through the flooded port (its vote request
// is accepted there) and keep leading it with heartbeats.
func TestRaftAcceptBoundsUnauthenticated(t *testing.T) {
	const flood = 200
	addrs := freeAddrs(t, 4)
	peers := []Peer{{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}, {ID: "n1", RaftAddr: addrs[2], GRPCAddr: addrs[3]}}
	logs := &tlsauthtest.Log{} // the bound warns on the Bundle's logger (the node's, in ddpm coordinator)
	sec := tlsauthtest.Load(t, tlsauthtest.Dir(t), logs)
	dir := t.TempDir()
	start := func(p Peer, electionTimeout time.Duration, log *slog.Logger) *Node {
		t.Helper()
		rc := FastRaftConfig(p.ID)
		rc.HeartbeatTimeout, rc.ElectionTimeout = electionTimeout, electionTimeout
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers,
			DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Version: "v1", Security: sec, Raft: rc, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		return node
	}
	// n0 waits 20 s before campaigning, so only n1's vote request can elect a leader here.
	n0 := start(peers[0], 20*time.Second, slog.New(slog.NewTextHandler(logs, nil)))

	var mu sync.Mutex
	var conns []net.Conn
	dial := func() {
		c, err := net.Dial("tcp", peers[0].RaftAddr)
		if err != nil {
			t.Error(err)
			return
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	for range flood {
		dial()
	}
	g := n0.raftGuard
	deadline := time.Now().Add(time.Minute)
	for g.Closed() < flood-MaxRaftPending && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p, c := g.Pending(), g.Closed(); p != MaxRaftPending || c != flood-MaxRaftPending {
		t.Fatalf("after %d idle connections: %d pending, %d closed; want %d and %d", flood, p, c, MaxRaftPending, flood-MaxRaftPending)
	}
	if n := strings.Count(logs.String(), MsgRaftPendingFull); n != 1 ||
		!strings.Contains(logs.String(), "limit=64 closed=1 ") {
		t.Fatalf("want one warning (limit=64 closed=1), got %d in:\n%s", n, logs.String())
	}

	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				dial()
			}
		}
	}()
	n1 := start(peers[1], 500*time.Millisecond, nil)
	deadline = time.Now().Add(time.Minute)
	for !(n1.Replica.IsLeader() && n0.Replica.Leader().ID == "n1") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-flooded
	if !n1.Replica.IsLeader() || n0.Replica.Leader().ID != "n1" {
		t.Fatalf("under the flood: n1 leader %v, n0 follows %q (pending %d, closed %d)",
			n1.Replica.IsLeader(), n0.Replica.Leader().ID, g.Pending(), g.Closed())
	}
	if p := g.Pending(); p > MaxRaftPending {
		t.Fatalf("%d pending after the flood, bound %d", p, MaxRaftPending)
	}
	if c := g.Closed(); c < flood-MaxRaftPending+20 {
		t.Fatalf("only %d connections closed: the flood did not keep the bound full during the election", c)
	}
}
