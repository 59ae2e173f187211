package main

import (
	"errors"
	"fmt"
	"testing"

	"ddpm/coordinator"
)

// TestCoordinatorFatalStatus: a replica ended by a raft.db it cannot write exits 1 (an
// operational failure: ddpm local and operators must not take it for a config conflict, which
// exits 2, as a cluster running another config or a leader of other rules still do). Before:
// every error on Node.Fatal exited 2.
func TestCoordinatorFatalStatus(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{&coordinator.StoreWriteError{Path: "d/raft.db", What: "raft's CurrentTerm", Err: errors.New("write d/raft.db: no space left on device")}, 1},
		{fmt.Errorf("node: %w", &coordinator.StoreWriteError{Path: "d/raft.db", What: "raft's LastVoteTerm", Err: errors.New("input/output error")}), 1},
		{&coordinator.RunConflictError{Where: "the cluster", Given: "--config run.yaml"}, 2},
		{&coordinator.ReleaseMismatchError{Replica: "c1", Version: "v2", Rules: 2}, 2},
	}
	for _, c := range cases {
		if got := fatalStatus(c.err); got != c.want {
			t.Errorf("fatalStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
