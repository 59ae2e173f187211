package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/coordinator/web"
)

// cluster is n real coordinator replicas (hashicorp/raft on its in-memory transport and
// stores) in this process, each with the package's handler on a loopback HTTP server.
type cluster struct {
	t     *testing.T
	reps  []*coordinator.Replica
	trans []*raft.InmemTransport
	srvs  []*httptest.Server
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	var peers []coordinator.Peer
	for i := range n {
		id := fmt.Sprintf("c%d", i)
		peers = append(peers, coordinator.Peer{ID: id, RaftAddr: id, GRPCAddr: id + ":grpc"})
		_, tr := raft.NewInmemTransport(raft.ServerAddress(id))
		c.trans = append(c.trans, tr)
	}
	for i, a := range c.trans {
		for j, b := range c.trans {
			if i != j {
				a.Connect(raft.ServerAddress(peers[j].RaftAddr), b)
			}
		}
	}
	for i := range n {
		store := raft.NewInmemStore()
		rep, err := coordinator.NewReplica(coordinator.ReplicaConfig{ID: peers[i].ID, Peers: peers, Bootstrap: true,
			LogStore: store, StableStore: store, Snapshots: raft.NewInmemSnapshotStore(), Transport: c.trans[i]})
		if err != nil {
			t.Fatal(err)
		}
		c.reps = append(c.reps, rep)
		c.srvs = append(c.srvs, httptest.NewServer(web.New(rep, web.Options{})))
	}
	t.Cleanup(func() {
		for i := range c.reps {
			c.stop(i)
		}
	})
	return c
}

func (c *cluster) stop(i int) {
	if c.reps[i] == nil {
		return
	}
	c.srvs[i].Close()
	if err := c.reps[i].Shutdown(); err != nil {
		c.t.Error(err)
	}
	c.trans[i].Close()
	c.reps[i] = nil
}

// leader waits until one live replica leads and returns its index.
func (c *cluster) leader() int {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for i, r := range c.reps {
			if r != nil && r.IsLeader() {
				return i
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader elected within a minute")
	return -1
}

// t0 is the clock of the commands the tests propose (Unix ns); step s happens at t0 + s*stepNS,
// so every trainer runs at exactly 1e9/stepNS steps per second.
const (
	t0     = int64(1_800_000_000_000_000_000)
	stepNS = int64(500 * time.Millisecond)
)

func (c *cluster) propose(i int, cmd fsm.Command) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.reps[i].Propose(ctx, cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := res.Err(); err != nil {
		c.t.Fatalf("%s: %v", cmd.Kind, err)
	}
}

// start submits a 10k-step MNIST run and joins one trainer, which becomes rank 0 of
// generation 1. It returns the generation number.
func (c *cluster) start(i int) uint64 {
	c.t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		c.t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery = 10_000, 100
	c.propose(i, fsm.Command{Kind: fsm.KindSubmit, Time: t0, Submit: &fsm.Submit{Run: run}})
	c.propose(i, fsm.Command{Kind: fsm.KindJoin, Time: t0, Join: &fsm.Join{ID: "trainer-a", Address: "10.0.0.1:7000", Version: "test"}})
	return 1
}

// point is the known stream: a decaying loss with a wiggle, its quartiles and step timings.
func point(step int64) fsm.LossPoint {
	s := float64(step)
	l := 0.05 + 1/(1+0.05*s) + 0.02*math.Sin(s)
	return fsm.LossPoint{Loss: l, LossQuartiles: [4]float64{2 * l, 1.2 * l, 0.8 * l, 0.5 * l},
		GradNorm: 1 + 1/(1+s), LR: 2e-4 * math.Min(1, s/200), ImagesPerSec: 64, ComputeSec: 0.4 + 0.001*s,
		AllReduceSec: 0.08, WaitSec: 0.02, BusBW: 1.5e8}
}

// report proposes rank 0's progress for steps [from, to].
func (c *cluster) report(i int, gen uint64, from, to int64) {
	c.t.Helper()
	for s := from; s <= to; s++ {
		c.propose(i, fsm.Command{Kind: fsm.KindProgress, Time: t0 + s*stepNS, Progress: &fsm.Progress{
			ID: "trainer-a", Generation: gen, Step: s, Point: point(s)}})
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// waitApplied waits until replica i has applied at least index.
func (c *cluster) waitApplied(i int, index uint64) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for c.reps[i].AppliedIndex() < index {
		if time.Now().After(deadline) {
			c.t.Fatalf("replica %d applied %d, want %d", i, c.reps[i].AppliedIndex(), index)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
