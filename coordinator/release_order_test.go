package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ddpm/coordinator/fsm"
)

// TestCommandsFollowTheirTermsRecord: proposers call Propose on a follower without pause while
// leadership is handed to it, six times over (three real raft replicas on in-memory
// transports, no log compaction). Every command in the log then comes after the release record
// of its own raft term, so a follower of other rules stops before applying any of it, and the
// proposals on the new leader succeed. Before, a Propose that found the replica not yet leading
// skipped the record and reached raft just as it won: its command entered the new term ahead
// of the record (a few per handover).
func TestCommandsFollowTheirTermsRecord(t *testing.T) {
	c := newInmemStores(t, 3)
	defer c.shutdown()
	for i := range c.trans {
		_, c.trans[i] = raft.NewInmemTransport(raft.ServerAddress(c.peers[i].RaftAddr))
	}
	for i := range c.trans {
		for j := range c.trans {
			if i != j {
				c.trans[i].Connect(raft.ServerAddress(c.peers[j].RaftAddr), c.trans[j])
			}
		}
	}
	for i := range c.reps {
		cfg := FastRaftConfig(c.peers[i].ID)
		cfg.SnapshotThreshold, cfg.TrailingLogs = 1<<20, 1<<20 // keep every entry to inspect
		rep, err := NewReplica(ReplicaConfig{ID: c.peers[i].ID, Peers: c.peers, Bootstrap: true, Raft: cfg,
			LogStore: c.stores[i], StableStore: c.stores[i], Snapshots: c.snaps[i], Transport: c.trans[i]})
		if err != nil {
			t.Fatal(err)
		}
		c.reps[i] = rep
	}
	var seq, ok atomic.Int64
	var other sync.Map // errors other than ErrNotLeader
	for range 6 {
		l := c.leader()
		x := (l + 1) % len(c.reps)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					_, err := c.reps[x].Propose(ctx, fsm.Command{Kind: fsm.KindSubmit, RequestID: fmt.Sprint("q", seq.Add(1)),
						Submit: &fsm.Submit{Run: testRun()}})
					cancel()
					switch {
					case err == nil:
						ok.Add(1)
					case !errors.Is(err, ErrNotLeader):
						other.Store(err.Error(), true)
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if err := c.reps[l].Raft().LeadershipTransferToServer(raft.ServerID(c.peers[x].ID), raft.ServerAddress(c.peers[x].RaftAddr)).Error(); err != nil {
			t.Logf("leadership transfer: %v", err)
		}
		time.Sleep(150 * time.Millisecond)
		close(stop)
		wg.Wait()
	}
	other.Range(func(k, _ any) bool { t.Errorf("Propose: %v", k); return true })
	if ok.Load() == 0 {
		t.Fatal("no proposal succeeded on a new leader")
	}
	s := c.stores[c.leader()]
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	recorded := map[uint64]bool{}
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := s.GetLog(i, &e); err != nil {
			t.Fatal(err)
		}
		if e.Type != raft.LogCommand {
			continue
		}
		cmd, err := fsm.DecodeCommand(e.Data)
		switch {
		case err != nil:
			t.Fatalf("entry %d: %v", i, err)
		case cmd.Kind == fsm.KindRelease:
			recorded[e.Term] = true
		case !recorded[e.Term]:
			t.Errorf("entry %d (%s) of term %d comes before the term's release record", i, cmd.Kind, e.Term)
		}
	}
	if len(recorded) < 6 {
		t.Errorf("release records in %d terms, want one in each term (7 unless a handover failed)", len(recorded))
	}
}
