package coordinator

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// TestRollbackThroughFollower: on a 3-replica cluster, the only holder of the newest committed
// checkpoint leaves and the run waits for it (world 0, the wait naming the rollback command);
// a rollback sent through a follower is refused with one line for a step nobody holds, the
// newest step or an unknown one, then restarts the run from the older checkpoint the remaining
// trainer holds: its assignment names that checkpoint at once, every replica records the
// abandoned one, and the recomputed checkpoint at the abandoned step commits.
func TestRollbackThroughFollower(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	nodes, c := dialFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if _, err := c.RollbackRun(ctx, 0); !errors.Is(err, fsm.ErrNoRun) {
		t.Fatalf("rollback before a run: %v", err)
	}
	run, _ := config.Preset("mnist")
	run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery, run.KeepCheckpoints = 1, 1, 100, 10, 3
	hash, err := c.SubmitRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	ja, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7", ConfigHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	sha10, sha20, sha20again := strings.Repeat("1a", 32), strings.Repeat("2b", 32), strings.Repeat("2c", 32)
	for _, ck := range []struct {
		step int64
		sha  string
	}{{10, sha10}, {20, sha20}} {
		if _, err := c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "a", Incarnation: ja.Incarnation, Generation: 1, Step: ck.step, Sha256: ck.sha, Size: 99}); err != nil {
			t.Fatal(err)
		}
	}
	// b holds 10 (a copy from a's volume); max_trainers 1, so it stands by.
	jb, err := c.Join(ctx, JoinRequest{ID: "b", Address: "10.0.0.2:1", Version: "v7", ConfigHash: hash, Held: []fsm.Held{{Step: 10, SHA256: sha10}}})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *api.Assignment, 16)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go c.WatchAssignmentAs(wctx, "b", jb.Incarnation, func(a *api.Assignment) error { got <- a; return nil })
	if a := <-got; a.Rank != -1 || a.World != 1 {
		t.Fatalf("b's first assignment %v, want a standby of a world of 1", a)
	}
	if _, err := c.RollbackRun(ctx, 20); !errors.Is(err, fsm.ErrBadRollback) ||
		err.Error() != "cannot roll back: checkpoint 20 is the newest committed one, nothing is newer to abandon (committed checkpoints: 10, 20)" {
		t.Fatalf("rollback to the newest: %v", err)
	}

	// a leaves with its volume: nobody holds 20.
	gen, err := c.LeaveAs(ctx, "a", ja.Incarnation)
	if err != nil {
		t.Fatal(err)
	}
	if a := <-got; a.Generation != gen || a.World != 0 || a.StartStep != 20 {
		t.Fatalf("after a left: %v, want world 0 waiting at step 20 (generation %d)", a, gen)
	}
	st, err := c.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cp := st.HolderWait(); cp == nil || cp.Step != 20 || st.RollbackTarget() != 10 {
		t.Fatalf("holder wait %v, rollback target %d; want checkpoint 20 and 10", cp, st.RollbackTarget())
	}
	if last := st.Events[len(st.Events)-1].Text; !strings.Contains(last, "waiting for a holder of checkpoint 20 (a) to rejoin; if none can, roll back: ddpm checkpoint rollback --coordinator ADDR --to-step 10") {
		t.Fatalf("last event %q does not name the way out", last)
	}
	for _, bad := range []struct {
		to   int64
		want string
	}{
		{15, "cannot roll back: step 15 is not a committed checkpoint (committed checkpoints: 10, 20; or 0 for the start)"},
		{20, "cannot roll back: checkpoint 20 is the newest committed one, nothing is newer to abandon (committed checkpoints: 10, 20)"},
		{-1, "bad command: to_step -1 is negative"},
	} {
		if _, err := c.RollbackRun(ctx, bad.to); err == nil || err.Error() != bad.want {
			t.Fatalf("rollback to %d: %v, want %q", bad.to, err, bad.want)
		}
	}

	gen, err = c.RollbackRun(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.Generation != gen || a.Rank != 0 || a.World != 1 || a.StartStep != 10 || a.Checkpoint.GetSha256() != sha10 ||
		len(a.Checkpoint.GetHolders()) != 1 || a.Checkpoint.Holders[0].Id != "b" {
		t.Fatalf("b's assignment after the rollback: %v, want rank 0 from checkpoint 10 held by b (generation %d)", a, gen)
	}
	// The recomputed 20 commits with its own hash.
	if _, err := c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "b", Incarnation: jb.Incarnation, Generation: gen, Step: 20, Sha256: sha20again, Size: 99}); err != nil {
		t.Fatalf("recomputed checkpoint 20: %v", err)
	}
	// Every replica applies the same: 20 abandoned (with a as holder), the new 20 committed.
	deadline := time.Now().Add(time.Minute)
	for i, n := range nodes {
		for {
			var ok bool
			var desc string
			n.Replica.View(func(s *fsm.State) {
				latest := s.LatestCheckpoint()
				ok = len(s.Abandoned) == 1 && s.Abandoned[0].Step == 20 && s.Abandoned[0].SHA256 == sha20 &&
					s.Abandoned[0].RolledBackTo == 10 && slices.Equal(s.Abandoned[0].Holders, []string{"a"}) &&
					latest != nil && latest.Step == 20 && latest.SHA256 == sha20again && s.Generation.Number == gen
				desc = string(s.Encode())
			})
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %d state: %s", i, desc)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// replicaLister is a Coordinator service whose Status names the replicas it is set to.
type replicaLister struct {
	api.UnimplementedCoordinatorServer
	mu       sync.Mutex
	replicas []string
}

func (r *replicaLister) set(addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.replicas = addrs
}

func (r *replicaLister) Status(context.Context, *api.StatusRequest) (*api.StatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &api.StatusResponse{ReplicaId: "fake", Replicas: slices.Clone(r.replicas), StateJson: fsm.New().Encode()}, nil
}

// serveLister serves a replicaLister over gRPC on a loopback port.
func serveLister(t *testing.T) (*replicaLister, string, *grpc.Server) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	r := &replicaLister{}
	api.RegisterCoordinatorServer(srv, r)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return r, l.Addr().String(), srv
}

// TestClientForgetsDroppedReplica: an address the client learned from a replica's answer is
// dropped when a later answer no longer names it (the replica was moved or removed from
// --peers), so the client stops rotating to it; an address given to Dial stays, and an answer
// without a replica list changes nothing. Learned addresses used to be kept for good.
func TestClientForgetsDroppedReplica(t *testing.T) {
	first, addrA, srvA := serveLister(t)
	second, addrB, _ := serveLister(t)
	gone := freeAddrs(t, 2) // nothing listens there
	c, err := Dial([]string{addrA}, insecureBundle(t), WithAttemptTimeout(time.Second), WithBackoff(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	status := func(want ...string) {
		t.Helper()
		if _, err := c.Status(ctx); err != nil {
			t.Fatal(err)
		}
		if got := c.Addrs(); !slices.Equal(got, want) {
			t.Fatalf("client rotates over %v, want %v", got, want)
		}
	}
	first.set(addrA, addrB, gone[0])
	status(addrA, addrB, gone[0])
	// An answer without a list (a replica older than the field) teaches nothing and drops nothing.
	first.set()
	status(addrA, addrB, gone[0])
	// A names B and another replica, no longer gone[0].
	first.set(addrA, addrB, gone[1])
	status(addrA, addrB, gone[1])

	// A goes down: B answers, naming only itself. The learned gone[1] goes; A, given, stays.
	srvA.Stop()
	second.set(addrB)
	status(addrA, addrB)
	// Calls go on through B (where the client turned), and the list follows B's answers.
	second.set(addrB, gone[0])
	status(addrA, addrB, gone[0])
	second.set(addrB)
	status(addrA, addrB)
}
