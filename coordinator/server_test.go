package coordinator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// startNodes starts n coordinator nodes in this process on loopback with real bbolt stores.
// Every link (raft and gRPC) is mutual TLS with one fresh certificate directory; refusals are
// logged to log when it is not nil.
func startNodes(t *testing.T, n int, version string, log *tlsauthtest.Log) ([]*Node, []string) {
	t.Helper()
	addrs := freeAddrs(t, 2*n)
	var peers []Peer
	for i := range n {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
	}
	dir := t.TempDir()
	sec := tlsauthtest.Load(t, tlsauthtest.Dir(t), log)
	var nodes []*Node
	var grpcAddrs []string
	for i, p := range peers {
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers,
			DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Version: version, Security: sec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		nodes = append(nodes, node)
		grpcAddrs = append(grpcAddrs, peers[i].GRPCAddr)
	}
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.Replica.IsLeader() {
				return nodes, grpcAddrs
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within a minute")
	return nil, nil
}

// dialFollower starts a 3-replica cluster (version v7) and returns its nodes and a client that
// knows only one follower's address (its writes are forwarded to the leader), closed at cleanup.
func dialFollower(t *testing.T) ([]*Node, *Client) {
	t.Helper()
	nodes, addrs := startNodes(t, 3, "v7", nil)
	follower := ""
	for i, n := range nodes {
		if !n.Replica.IsLeader() {
			follower = addrs[i]
			break
		}
	}
	c, err := Dial([]string{follower}, nodes[0].cfg.Security)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return nodes, c
}

// TestServiceThroughFollower drives every RPC through a follower only (writes are forwarded to
// the leader) and checks that refusals arrive as the state machine's errors.
func TestServiceThroughFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	_, c := dialFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	run, _ := config.Preset("mnist")
	run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery = 2, 2, 100, 50
	bad := run
	bad.GlobalBatch, bad.Dataset = 0, ""
	if _, err := c.SubmitRun(ctx, bad); !errors.Is(err, fsm.ErrInvalidConfig) ||
		err.Error() != "invalid run config: dataset is missing; global_batch must be positive, got 0" {
		t.Fatalf("bad submit: %v", err)
	}
	hash, err := c.SubmitRun(ctx, run)
	if err != nil || hash != run.Hash() {
		t.Fatalf("submit: %q %v", hash, err)
	}
	other := run
	other.Seed = 5
	if _, err := c.SubmitRun(ctx, other); !errors.Is(err, fsm.ErrConfigMismatch) {
		t.Fatalf("second run: %v", err)
	}
	if _, err := c.Join(ctx, JoinRequest{ID: "old", Version: "v6"}); !errors.Is(err, ErrVersionMismatch) ||
		!strings.Contains(err.Error(), `trainer "old" runs binary version "v6", the coordinator runs "v7"`) {
		t.Fatalf("version: %v", err)
	}
	if _, err := c.Join(ctx, JoinRequest{ID: "x", Address: "10.0.0.9:1", Version: "v7", ConfigHash: other.Hash()}); !errors.Is(err, fsm.ErrConfigMismatch) {
		t.Fatalf("config hash: %v", err)
	}
	j, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7", ConfigHash: hash})
	if err != nil || j.Run.Hash() != hash || j.Generation != 0 {
		t.Fatalf("join a: %+v %v", j, err)
	}
	got := make(chan *api.Assignment, 8)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go c.WatchAssignment(wctx, "a", func(a *api.Assignment) error { got <- a; return nil })
	if a := <-got; a.World != 0 || a.Rank != -1 || a.RunStatus != "pending" {
		t.Fatalf("first assignment %v", a)
	}
	if _, err := c.Join(ctx, JoinRequest{ID: "b", Address: "10.0.0.2:1", Version: "v7"}); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.Generation != 1 || a.Rank != 0 || a.World != 2 || a.Ring[1].Address != "10.0.0.2:1" || a.Checkpoint != nil {
		t.Fatalf("generation 1 assignment %v", a)
	}
	if _, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Generation: 9, Step: 1}); !errors.Is(err, fsm.ErrStaleGeneration) {
		t.Fatalf("stale report: %v", err)
	}
	if _, err := c.Heartbeat(ctx, "ghost"); !errors.Is(err, fsm.ErrUnknownMember) {
		t.Fatalf("ghost heartbeat: %v", err)
	}
	sha := strings.Repeat("0f", 32)
	for _, id := range []string{"a", "b"} {
		if _, err := c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: id, Generation: 1, Step: 50, Sha256: sha, Size: 99}); err != nil {
			t.Fatal(err)
		}
	}
	// b restarts (joins again): its ring is broken, generation 2 resumes from the checkpoint.
	if _, err := c.Join(ctx, JoinRequest{ID: "b", Address: "10.0.0.2:1", Version: "v7"}); err != nil {
		t.Fatal(err)
	}
	a = <-got
	if a.Generation != 2 || a.World != 2 || a.StartStep != 50 || a.Checkpoint.GetSha256() != sha || len(a.Checkpoint.GetHolders()) != 2 {
		t.Fatalf("after b restarted: %v", a)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Generation != 2 || st.RunStatus != "running" || st.LeaderId == "" {
		t.Fatalf("status %v %v", st, err)
	}
	// b stops on purpose: Leave removes it at once, not at its heartbeat timeout (5 s,
	// longer than this test), and a's generation ends; a alone is below min_trainers and waits.
	left := time.Now()
	gen, err := c.Leave(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	a = <-got
	if a.Generation != gen || gen <= 2 || a.World != 0 || a.Rank != -1 {
		t.Fatalf("after b left (generation %d): %v", gen, a)
	}
	if d := time.Since(left); d > 5*time.Second {
		t.Fatalf("a heard of b leaving after %v", d)
	}
	if _, err := c.Heartbeat(ctx, "b"); !errors.Is(err, fsm.ErrUnknownMember) {
		t.Fatalf("heartbeat of a trainer that left: %v", err)
	}
	if again, err := c.Leave(ctx, "b"); err != nil || again != gen {
		t.Fatalf("leaving twice: generation %d, %v; want %d, nil", again, err, gen)
	}
	wcancel()
}

// TestForwardToWrongLeaderAddress: a replica whose --peers gives the leader a wrong gRPC address
// (a typo made by hand on one machine) answers its callers with an error that names itself, the
// leader, the address and --peers, and the client's hint points there; it used to pass the
// dial error through, which read as "nothing listens at that address (coordinator down?)" for
// a replica that was up and answering.
func TestForwardToWrongLeaderAddress(t *testing.T) {
	addrs := freeAddrs(t, 8)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
	}
	// n2's list gives n0 and n1 an address where nothing listens.
	wrong := slices.Clone(peers)
	wrong[0].GRPCAddr, wrong[1].GRPCAddr = addrs[6], addrs[7]
	sec := tlsauthtest.Load(t, tlsauthtest.Dir(t), nil)
	dir := t.TempDir()
	var nodes []*Node
	for i, p := range peers {
		list := peers
		if i == 2 {
			list = wrong
		}
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: list,
			DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Version: "v1", Security: sec})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		nodes = append(nodes, node)
	}
	// n2 must follow n0 or n1.
	deadline := time.Now().Add(time.Minute)
	for {
		l := nodes[2].Replica.Leader().ID
		if l == "n0" || l == "n1" {
			break
		}
		if l == "n2" {
			_ = nodes[2].Replica.Raft().LeadershipTransfer().Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 follows %q", l)
		}
		time.Sleep(50 * time.Millisecond)
	}
	leader := nodes[2].Replica.Leader()
	c, err := Dial([]string{peers[2].GRPCAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	run, _ := config.Preset("mnist")
	_, err = c.SubmitRun(ctx, run)
	want := fmt.Sprintf("replica n2 cannot reach the leader %s at %s (its gRPC address in n2's --peers): connection error:", leader.ID, leader.GRPCAddr)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), want) {
		t.Fatalf("submit through n2: %v\nwant it to contain %q", err, want)
	}
	if h := Hint(err); h != "that replica answers but cannot forward to the leader: check the leader's gRPC address in that replica's --peers" {
		t.Fatalf("hint %q", h)
	}
}
