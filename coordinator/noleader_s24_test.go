package coordinator

import (
	"log/slog"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestNoLeaderWithoutBootstrapS24: a replica started on a new --data-dir without --bootstrap
// holds no raft configuration, so it never campaigns; its no-leader warning says to bootstrap a
// new cluster instead of pointing at --peers (which are right). The hint was the --peers one.
func TestNoLeaderWithoutBootstrapS24(t *testing.T) {
	old := noLeaderWarnAfter
	t.Cleanup(func() { noLeaderWarnAfter = old })
	noLeaderWarnAfter = 2 * time.Second
	a := freeAddrs(t, 2)
	var buf tlsauthtest.Log
	peers := []Peer{{ID: "n0", RaftAddr: a[0], GRPCAddr: a[1]}}
	node, err := StartNode(NodeConfig{ID: "n0", RaftAddr: a[0], GRPCAddr: a[1], Peers: peers, DataDir: t.TempDir(),
		Version: "v1", Security: insecureBundle(t), Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	deadline := time.Now().Add(time.Minute)
	for {
		for _, r := range records(t, &buf) {
			if r["msg"] != MsgNoLeader {
				continue
			}
			want := "this replica holds no raft configuration: start the replicas of a new cluster with --bootstrap " +
				"(one --peers for all); a replica the running cluster lists, started without it, waits until their leader reaches its raft address"
			if r["voters"] != "" || r["hint"] != want {
				t.Fatalf("warning %v\nwant voters \"\", hint %q", r, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q warning within a minute; log:\n%s", MsgNoLeader, buf.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
