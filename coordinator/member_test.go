package coordinator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// TestStaleIncarnationThroughFollower: over real gRPC, through a follower that forwards to the
// leader, every member call of an incarnation the id has since been admitted past is refused
// with a *StaleIncarnationError naming the current incarnation and address (errors.Is
// fsm.ErrStaleIncarnation) and changes nothing; the watch of the old incarnation ends with it;
// the current incarnation and unchecked (0) calls go through.
func TestStaleIncarnationThroughFollower(t *testing.T) {
	c, ctx := followerWithRun(t)
	first, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7"})
	if err != nil || first.Incarnation == 0 {
		t.Fatalf("join: %+v %v", first, err)
	}
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- c.WatchAssignmentAs(ctx, "a", first.Incarnation, func(*api.Assignment) error { return nil })
	}()
	// The process restarts and joins again: a new incarnation.
	second, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7"})
	if err != nil || second.Incarnation <= first.Incarnation {
		t.Fatalf("second join: %+v %v (first incarnation %d)", second, err, first.Incarnation)
	}
	check := func(what string, err error) {
		t.Helper()
		var se *StaleIncarnationError
		if !errors.As(err, &se) || !errors.Is(err, fsm.ErrStaleIncarnation) || se.Current != second.Incarnation || se.Address != "10.0.0.1:1" ||
			!strings.Contains(err.Error(), "is not the current one: the id was admitted again as incarnation") {
			t.Fatalf("%s as the old incarnation: %v (%+v)", what, err, se)
		}
	}
	select {
	case err := <-watchErr:
		check("watch", err)
	case <-ctx.Done():
		t.Fatal("the old incarnation's watch did not end")
	}
	before, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.HeartbeatAs(ctx, "a", first.Incarnation)
	check("heartbeat", err)
	_, err = c.LeaveAs(ctx, "a", first.Incarnation)
	check("leave", err)
	_, err = c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Incarnation: first.Incarnation, Generation: before.Generation.Number, Step: 1})
	check("progress", err)
	_, err = c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Incarnation: first.Incarnation, Generation: before.Generation.Number, Failure: "old"})
	check("failure report", err)
	_, err = c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "a", Incarnation: first.Incarnation, Generation: before.Generation.Number,
		Step: 50, Sha256: strings.Repeat("0f", 32), Size: 9})
	check("checkpoint", err)
	after, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m := after.Members["a"]; m == nil || m.Incarnation != second.Incarnation || after.Status != before.Status || after.Step != 0 ||
		after.Generation.Number != before.Generation.Number {
		t.Fatalf("after the old incarnation's calls: member %+v, status %s, step %d, generation %d (was %d)",
			m, after.Status, after.Step, after.Generation.Number, before.Generation.Number)
	}
	if _, err := c.HeartbeatAs(ctx, "a", second.Incarnation); err != nil {
		t.Fatalf("current incarnation: %v", err)
	}
	if _, err := c.Heartbeat(ctx, "a"); err != nil {
		t.Fatalf("unchecked heartbeat: %v", err)
	}
	if _, err := c.LeaveAs(ctx, "a", second.Incarnation); err != nil {
		t.Fatalf("current incarnation leaves: %v", err)
	}
}

// TestClientLearnsReplicas: a client given the address of one replica of three learns the
// others' from its answers (Join, Heartbeat), so when that replica goes down its heartbeats go
// on through another and its assignment watch reconnects there. It used to rotate over the one
// address it was given, and was cut off while that replica was down.
func TestClientLearnsReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	nodes, addrs := startNodes(t, 3, "v7", nil)
	sec := nodes[0].cfg.Security
	all, err := Dial(addrs, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run, _ := config.Preset("mnist")
	run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery = 2, 2, 100, 50
	if _, err := all.SubmitRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	// The one replica given is the leader: its loss also costs an election.
	given := -1
	for i, n := range nodes {
		if n.Replica.IsLeader() {
			given = i
		}
	}
	if given < 0 {
		t.Fatal("no leader")
	}
	c, err := Dial([]string{addrs[given]}, sec, WithAttemptTimeout(500*time.Millisecond), WithBackoff(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	j, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Addrs(); len(got) != 3 || got[0] != addrs[given] || !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(addrs))) {
		t.Fatalf("client rotates over %v after joining, want the given %s then the other replicas of %v", got, addrs[given], addrs)
	}
	got := make(chan *api.Assignment, 16)
	go c.WatchAssignmentAs(ctx, "a", j.Incarnation, func(a *api.Assignment) error { got <- a; return nil })
	if a := <-got; a.World != 0 || a.Rank != -1 {
		t.Fatalf("first assignment %v, want world 0 (min_trainers 2)", a)
	}

	if err := nodes[given].Close(); err != nil {
		t.Fatal(err)
	}
	// Every heartbeat for a few seconds (an election included) gets through another replica.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.HeartbeatAs(hctx, "a", j.Incarnation)
		hcancel()
		if err != nil {
			t.Fatalf("heartbeat with replica %s down: %v", addrs[given], err)
		}
	}
	// The watch follows: a second trainer joining (through the survivors) starts a's first ring.
	if _, err := all.Join(ctx, JoinRequest{ID: "b", Address: "10.0.0.2:1", Version: "v7"}); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case a := <-got:
			if a.World == 2 {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no assignment change reached the watch with replica %s down", addrs[given])
		}
	}
}

// TestWatchAheadOfLaggingReplica: a watch naming an incarnation newer than the one the answering
// replica has applied (a follower that has not yet applied the Join the leader just committed:
// a restarted trainer watches right after its rejoin) waits for that Join instead of ending with
// the stale_incarnation refusal. The refusal named the old incarnation and address as "a newer
// process", so a restarted trainer with a new address (a pod's new IP) exited 3 as replaced.
func TestWatchAheadOfLaggingReplica(t *testing.T) {
	c, ctx := followerWithRun(t)
	first, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7"})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the follower has applied the first Join; the next admission's incarnation is
	// then NextJoin+1 (Member.Incarnation is JoinSeq+1).
	var next uint64
	for {
		st, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.Members["a"]; m != nil && m.Incarnation == first.Incarnation {
			next = st.NextJoin + 1
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := make(chan *api.Assignment, 1)
	watchErr := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		watchErr <- c.WatchAssignmentAs(wctx, "a", next, func(a *api.Assignment) error {
			select {
			case got <- a:
			default:
			}
			return nil
		})
	}()
	select {
	case err := <-watchErr:
		t.Fatalf("watch as incarnation %d, ahead of the follower's %d, ended: %v", next, first.Incarnation, err)
	case <-time.After(500 * time.Millisecond):
	}
	second, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7"})
	if err != nil || second.Incarnation != next {
		t.Fatalf("rejoin: %+v %v, want incarnation %d", second, err, next)
	}
	select {
	case <-got:
	case err := <-watchErr:
		t.Fatalf("watch of the new incarnation ended: %v", err)
	case <-ctx.Done():
		t.Fatal("no assignment for the new incarnation")
	}
	wcancel()
	if err := <-watchErr; err != nil {
		t.Fatalf("watch after cancel: %v", err)
	}
}

// TestClientSkipsWildcardReplica: a replica whose --peers names its gRPC address as the
// wildcard it listens on (0.0.0.0:PORT, accepted for a single replica: no forwarding uses it)
// does not teach clients that address. From another machine it named the client's own host:
// the client rotated to whatever listens there and logged that it could not reach
// "coordinator 0.0.0.0:PORT".
func TestClientSkipsWildcardReplica(t *testing.T) {
	addrs := freeAddrs(t, 2)
	port := addrs[1][strings.LastIndex(addrs[1], ":")+1:]
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: "0.0.0.0:" + port}
	sec := insecureBundle(t)
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: t.TempDir(), Bootstrap: true, Version: "v7", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	given := "127.0.0.1:" + port
	c, err := Dial([]string{given}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Replicas) != 1 || resp.Replicas[0] != p.GRPCAddr {
		t.Fatalf("the replica named %v, want [%s]", resp.Replicas, p.GRPCAddr)
	}
	if got := c.Addrs(); len(got) != 1 || got[0] != given {
		t.Fatalf("client rotates over %v, want only %s", got, given)
	}
}

// followerWithRun starts a 3-replica cluster (skipped under -short), dials a follower only (writes
// are forwarded to the leader) and submits the mnist preset with min_trainers 1, max_trainers 2,
// 100 steps and a checkpoint every 50, through it. The context ends after 30 s or with the test.
func followerWithRun(t *testing.T) (*Client, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	_, c := dialFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	run, _ := config.Preset("mnist")
	run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery = 1, 2, 100, 50
	if _, err := c.SubmitRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}
