package coordinator

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestLeaderLogsClusterEvents: the leader logs each event the state machine records (here a
// trainer's join and the generation it starts) once, at INFO, with the event's text.
func TestLeaderLogsClusterEvents(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.MinTrainers = 1
	var logbuf tlsauthtest.Log
	addrs := freeAddrs(t, 2)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: insecureBundle(t), Run: &run,
		Logger: slog.New(slog.NewJSONHandler(&logbuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	cli, err := Dial([]string{p.GRPCAddr}, insecureBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Join(ctx, JoinRequest{ID: "t1", Address: "127.0.0.1:9", Version: "v1", ConfigHash: run.Hash()}); err != nil {
		t.Fatal(err)
	}
	want := `"msg":"` + MsgClusterEvent + `","replica":"n0","kind":"generation","generation":1,"text":"generation 1: world 1 [t1] from step 0`
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logbuf.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no line containing\n%s\nin the leader's log:\n%s", want, logbuf.String())
		}
	}
	if n := strings.Count(logbuf.String(), `"text":"generation 1:`); n != 1 {
		t.Fatalf("generation 1 logged %d times, want once:\n%s", n, logbuf.String())
	}
}
