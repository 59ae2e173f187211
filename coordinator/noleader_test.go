package coordinator

import (
	"log/slog"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestReplicaWarnsWithoutLeader: a replica that knows no raft leader (here: its --peers names a
// second voter that never answers, so it can never win a majority — as when the replicas were
// given different peer lists) logs MsgNoLeader with its role, term and the voters it knows, at
// WARN; a replica of a healthy cluster logs none. It used to stay a silent candidate.
func TestReplicaWarnsWithoutLeader(t *testing.T) {
	old := noLeaderWarnAfter
	t.Cleanup(func() { noLeaderWarnAfter = old })
	noLeaderWarnAfter = 2 * time.Second
	certs := tlsauthtest.Dir(t)
	start := func(peers []Peer) *tlsauthtest.Log {
		var buf tlsauthtest.Log
		node, err := StartNode(NodeConfig{ID: peers[0].ID, RaftAddr: peers[0].RaftAddr, GRPCAddr: peers[0].GRPCAddr, Peers: peers,
			DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: tlsauthtest.Load(t, certs, nil),
			Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		return &buf
	}
	a := freeAddrs(t, 5)
	cut := start([]Peer{{ID: "n0", RaftAddr: a[0], GRPCAddr: a[1]}, {ID: "ghost", RaftAddr: a[2], GRPCAddr: a[3]}})
	healthy := start([]Peer{{ID: "h0", RaftAddr: a[4], GRPCAddr: freeAddrs(t, 1)[0]}})
	time.Sleep(3500 * time.Millisecond)

	var warns []map[string]any
	for _, r := range records(t, cut) {
		if r["msg"] == MsgNoLeader {
			warns = append(warns, r)
		}
	}
	if len(warns) == 0 {
		t.Fatalf("no %q warning from a replica without a majority; log:\n%s", MsgNoLeader, cut.String())
	}
	w := warns[0]
	if w["level"] != "WARN" || (w["role"] != "candidate" && w["role"] != "follower") || w["voters"] != "n0="+a[0]+",ghost="+a[2] ||
		w["hint"] != "every replica needs the same --peers, each raft address reachable, and a majority up" {
		t.Fatalf("warning %v", w)
	}
	for _, r := range records(t, healthy) {
		if r["msg"] == MsgNoLeader {
			t.Fatalf("a replica with a leader warned: %v", r)
		}
	}
}
