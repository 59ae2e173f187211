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
	// A healthy replica knows its leader well within this even under load; the cut one warns
	// after it.
	noLeaderWarnAfter = 5 * time.Second
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
	// Wait for the warning itself: a fixed sleep past noLeaderWarnAfter assumed the replica
	// started and its watch ticked on time, which a loaded machine does not promise.
	var warns []map[string]any
	for deadline := time.Now().Add(time.Minute); len(warns) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q warning from a replica without a majority within a minute; log:\n%s", MsgNoLeader, cut.String())
		}
		for _, r := range records(t, cut) {
			if r["msg"] == MsgNoLeader {
				warns = append(warns, r)
			}
		}
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
