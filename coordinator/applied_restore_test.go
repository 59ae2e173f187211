package coordinator

import (
	"testing"
	"testing/synctest"
	"time"

	"ddpm/coordinator/fsm"
)

// TestAppliedIndexAfterSnapshotRestore: a replica restarted on a snapshot that holds its whole
// log reports (ddpm status, /api/status, ddpm_raft_applied_index) at least the index it had
// applied before, not 0: the state machine learns a snapshot's contents through Restore, which
// does not apply entries, and the applied index only followed applied entries.
func TestAppliedIndexAfterSnapshotRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newInmemCluster(t, 1)
		defer c.shutdown()
		l := c.leader()
		for range 5 {
			c.propose(l, fsm.Command{Kind: fsm.KindJoin, Join: &fsm.Join{ID: "a", Address: "a:1"}})
		}
		before := c.reps[0].AppliedIndex()
		if before == 0 {
			t.Fatal("applied index 0 after five commands")
		}
		if err := c.reps[0].Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		c.stop(0)
		c.start(0, false)
		c.leader()
		deadline := time.Now().Add(10 * time.Second)
		for c.reps[0].Raft().AppliedIndex() < before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := c.reps[0].AppliedIndex(); got < before {
			t.Fatalf("applied index %d after the restart on a snapshot, %d before it", got, before)
		}
	})
}
