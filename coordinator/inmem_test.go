package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// inmemCluster is n replicas on raft's in-memory transport and stores, for synctest bubbles.
type inmemCluster struct {
	t      *testing.T
	peers  []Peer
	stores []*raft.InmemStore
	snaps  []*raft.InmemSnapshotStore
	trans  []*raft.InmemTransport
	mu     sync.Mutex // guards reps against the heartbeat goroutine
	reps   []*Replica
	// rules is each replica's state machine rules version (ReplicaConfig.Rules; 0: this one's).
	rules []int
}

func newInmemCluster(t *testing.T, n int) *inmemCluster {
	c := newInmemStores(t, n)
	for i := range n {
		c.start(i, true)
	}
	return c
}

// newInmemStores returns a cluster of n replicas' stores with none started.
func newInmemStores(t *testing.T, n int) *inmemCluster {
	c := &inmemCluster{t: t}
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		c.peers = append(c.peers, Peer{ID: id, RaftAddr: id, GRPCAddr: id + ":grpc"})
		c.stores = append(c.stores, raft.NewInmemStore())
		c.snaps = append(c.snaps, raft.NewInmemSnapshotStore())
		c.trans = append(c.trans, nil)
		c.reps = append(c.reps, nil)
		c.rules = append(c.rules, 0)
	}
	return c
}

// start (re)starts replica i on its existing stores with a fresh transport wired to the others.
func (c *inmemCluster) start(i int, bootstrap bool) {
	_, tr := raft.NewInmemTransport(raft.ServerAddress(c.peers[i].RaftAddr))
	c.trans[i] = tr
	for j, other := range c.trans {
		if j != i && other != nil {
			tr.Connect(raft.ServerAddress(c.peers[j].RaftAddr), other)
			other.Connect(raft.ServerAddress(c.peers[i].RaftAddr), tr)
		}
	}
	cfg := FastRaftConfig(c.peers[i].ID)
	cfg.SnapshotThreshold = 64 // exercise snapshots and log compaction in the scenario
	cfg.TrailingLogs = 16
	cfg.SnapshotInterval = 2 * time.Second
	rep, err := NewReplica(ReplicaConfig{ID: c.peers[i].ID, Peers: c.peers, Bootstrap: bootstrap, Raft: cfg,
		LogStore: c.stores[i], StableStore: c.stores[i], Snapshots: c.snaps[i], Transport: tr,
		Version: c.version(i), Rules: c.rules[i]})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.reps[i] = rep
	c.mu.Unlock()
}

// version is replica i's binary version: "v-rules" and its rules version.
func (c *inmemCluster) version(i int) string {
	rules := c.rules[i]
	if rules == 0 {
		rules = fsm.RulesVersion
	}
	return fmt.Sprintf("v-rules%d", rules)
}

// liveReplicas returns the running replicas; the slice is a copy.
func (c *inmemCluster) liveReplicas() []*Replica {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Replica
	for _, r := range c.reps {
		if r != nil {
			out = append(out, r)
		}
	}
	return out
}

func (c *inmemCluster) stop(i int) {
	if err := c.reps[i].Shutdown(); err != nil {
		c.t.Fatal(err)
	}
	c.trans[i].Close()
	c.mu.Lock()
	c.reps[i] = nil
	c.mu.Unlock()
}

func (c *inmemCluster) shutdown() {
	for i := range c.reps {
		if c.reps[i] != nil {
			c.stop(i)
		}
	}
}

// partition cuts replica i off from the others, both ways.
func (c *inmemCluster) partition(i int) {
	c.trans[i].DisconnectAll()
	for j, tr := range c.trans {
		if j != i {
			tr.Disconnect(raft.ServerAddress(c.peers[i].RaftAddr))
		}
	}
}

func (c *inmemCluster) heal(i int) {
	for j, tr := range c.trans {
		if j != i {
			tr.Connect(raft.ServerAddress(c.peers[i].RaftAddr), c.trans[i])
			c.trans[i].Connect(raft.ServerAddress(c.peers[j].RaftAddr), tr)
		}
	}
}

// leader waits (in bubble time) until exactly one of the given replicas leads and returns it.
func (c *inmemCluster) leader(among ...int) int {
	if len(among) == 0 {
		for i := range c.reps {
			among = append(among, i)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		lead := -1
		count := 0
		for _, i := range among {
			if c.reps[i] != nil && c.reps[i].IsLeader() {
				lead, count = i, count+1
			}
		}
		if count == 1 {
			return lead
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no single leader among %v after 10s", among)
	return -1
}

// converge waits until every running replica applied the same index and returns their states,
// checking that they are byte-identical.
func (c *inmemCluster) converge() []byte {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var states [][]byte
		var idx []uint64
		for _, r := range c.reps {
			if r == nil {
				continue
			}
			idx = append(idx, r.AppliedIndex())
			r.View(func(s *fsm.State) { states = append(states, s.Encode()) })
		}
		same := true
		for k := range states {
			if idx[k] != idx[0] || !bytes.Equal(states[k], states[0]) {
				same = false
			}
		}
		if same {
			return states[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("replicas did not converge to equal states within 20s")
	return nil
}

func (c *inmemCluster) propose(i int, cmd fsm.Command) fsm.Result {
	c.t.Helper()
	res, err := c.reps[i].Propose(context.Background(), cmd)
	if err != nil {
		c.t.Fatalf("propose on r%d: %v", i, err)
	}
	return res
}

// TestInmemReplicas runs three replicas in one process, on raft's in-memory transport, inside a
// synctest bubble (time is virtual, so timeouts cost nothing): an election, a partitioned
// leader, a restarted follower catching up from a snapshot, the failure detector; after each
// scenario every replica's state is byte-identical.
func TestInmemReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newInmemCluster(t, 3)
		defer c.shutdown()

		l := c.leader()
		run, _ := config.Preset("mnist")
		run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery = 1, 2, 10_000, 50
		run.HeartbeatTimeout = config.Duration(3 * time.Second)
		c.propose(l, fsm.Command{Kind: fsm.KindSubmit, Submit: &fsm.Submit{Run: run}})
		c.propose(l, fsm.Command{Kind: fsm.KindJoin, RequestID: "join-a", Join: &fsm.Join{ID: "a", Address: "a:1"}})
		for step := int64(1); step <= 40; step++ {
			c.propose(l, fsm.Command{Kind: fsm.KindProgress, Progress: &fsm.Progress{ID: "a", Generation: 1, Step: step, Point: fsm.LossPoint{Loss: 1 / float64(step)}}})
		}
		c.converge()

		// Trainer a heartbeats through whichever replica leads, as a real client would.
		hbStop, hbDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(hbDone)
			for {
				select {
				case <-hbStop:
					return
				case <-time.After(500 * time.Millisecond):
				}
				for _, r := range c.liveReplicas() {
					if r.IsLeader() {
						ctx, cancel := context.WithTimeout(context.Background(), time.Second)
						r.Propose(ctx, fsm.Command{Kind: fsm.KindHeartbeat, Heartbeat: &fsm.Heartbeat{ID: "a"}})
						cancel()
					}
				}
			}
		}()

		// A follower cannot write.
		f := (l + 1) % 3
		if _, err := c.reps[f].Propose(context.Background(), fsm.Command{Kind: fsm.KindHeartbeat, Heartbeat: &fsm.Heartbeat{ID: "a"}}); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower propose: %v", err)
		}

		// Partition the leader: the other two elect a new one and keep committing; the old
		// leader's writes fail; after healing it rejoins as a follower with the same state.
		old := l
		c.partition(old)
		var rest []int
		for i := range 3 {
			if i != old {
				rest = append(rest, i)
			}
		}
		l = c.leader(rest...)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.reps[old].Propose(ctx, fsm.Command{Kind: fsm.KindHeartbeat, Heartbeat: &fsm.Heartbeat{ID: "a"}})
		cancel()
		if err == nil {
			t.Fatal("a partitioned leader committed a write")
		}
		for step := int64(41); step <= 100; step++ {
			c.propose(l, fsm.Command{Kind: fsm.KindProgress, Progress: &fsm.Progress{ID: "a", Generation: 1, Step: step, Point: fsm.LossPoint{Loss: 1 / float64(step)}}})
		}
		// The retried join (same request id) through the new leader applies once.
		res := c.propose(l, fsm.Command{Kind: fsm.KindJoin, RequestID: "join-a", Join: &fsm.Join{ID: "a", Address: "a:1"}})
		if res.Err() != nil || res.Generation != 1 {
			t.Fatalf("retried join: %+v", res)
		}
		c.heal(old)
		state := c.converge()
		s, _ := fsm.Decode(state)
		if s.Step != 100 || s.Generation.Number != 1 || len(s.Members) != 1 {
			t.Fatalf("after partition: step %d generation %d members %d", s.Step, s.Generation.Number, len(s.Members))
		}

		// Restart a follower: it catches up from its log and the others' snapshot.
		f = (l + 1) % 3
		c.stop(f)
		for step := int64(101); step <= 200; step++ {
			c.propose(l, fsm.Command{Kind: fsm.KindProgress, Progress: &fsm.Progress{ID: "a", Generation: 1, Step: step, Point: fsm.LossPoint{Loss: 1 / float64(step)}}})
		}
		if err := c.reps[l].Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		c.start(f, true) // --bootstrap on a replica with state is harmless
		state = c.converge()
		s, _ = fsm.Decode(state)
		if s.Step != 200 {
			t.Fatalf("restarted follower converged at step %d", s.Step)
		}

		// The failure detector: once a falls silent, both trainers are removed after the
		// timeout, and the generation moves on.
		c.propose(l, fsm.Command{Kind: fsm.KindJoin, Join: &fsm.Join{ID: "b", Address: "b:1"}})
		close(hbStop)
		<-hbDone
		start := time.Now()
		for {
			var members int
			c.reps[l].View(func(s *fsm.State) { members = len(s.Members) })
			if members == 0 {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatal("silent trainers were not removed within 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if el := time.Since(start); el < 2*time.Second || el > 4*time.Second {
			t.Fatalf("a and b removed after %v, want about the 3s timeout", el)
		}
		state = c.converge()
		s, _ = fsm.Decode(state)
		if s.Generation.World != 0 || s.Generation.Number < 2 {
			t.Fatalf("after expiry: %+v", s.Generation)
		}
	})
}
