package chaos

import (
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
)

// TestNoGenerationAfterSuccess pins what the elastic chaos run found: a trainer stalled past the
// heartbeat timeout near the end of an elastic run (min_trainers 1) comes back after its peers
// finished the last step and exited. Their silence expires them, and the state machine broke
// the ring of a run that had already succeeded: it started a new generation "from step 56"
// naming the late trainer alone, which lacked checkpoint 56 and had no live holder to fetch it
// from, so it exited with an error and `ddpm local` would report a finished run as failed. Once
// the run has succeeded (or failed), losing members must not start generations.
func TestNoGenerationAfterSuccess(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = 8, 4, 1, 3
	run.HeartbeatTimeout = config.Duration(2 * time.Second)
	s := fsm.New()
	now := int64(1_000_000_000_000)
	apply := func(c fsm.Command) {
		t.Helper()
		now += int64(100 * time.Millisecond)
		c.Time = now
		if r := fsm.Apply(s, c); r.Err() != nil {
			t.Fatalf("%s: %v", c.Kind, r.Err())
		}
	}
	sha := func(step int64) string {
		b := make([]byte, 64)
		for i := range b {
			b[i] = "0123456789abcdef"[(int(step)+i)%16]
		}
		return string(b)
	}
	apply(fsm.Command{Kind: fsm.KindSubmit, Submit: &fsm.Submit{Run: run}})
	apply(fsm.Command{Kind: fsm.KindJoin, Join: &fsm.Join{ID: "a", Address: "10.0.0.1:1"}}) // generation 1: [a]
	apply(fsm.Command{Kind: fsm.KindJoin, Join: &fsm.Join{ID: "b", Address: "10.0.0.2:1"}}) // waits for a commit
	apply(fsm.Command{Kind: fsm.KindCheckpoint, Checkpoint: &fsm.CheckpointReport{ID: "a", Generation: s.Generation.Number, Step: 4, SHA256: sha(4), Size: 16}})
	if s.Generation.World != 2 {
		t.Fatalf("after the commit at step 4: generation %d world %d, want world 2 (grown)", s.Generation.Number, s.Generation.World)
	}
	for _, id := range []string{"a", "b"} {
		apply(fsm.Command{Kind: fsm.KindCheckpoint, Checkpoint: &fsm.CheckpointReport{ID: id, Generation: s.Generation.Number, Step: 8, SHA256: sha(8), Size: 16}})
	}
	apply(fsm.Command{Kind: fsm.KindProgress, Progress: &fsm.Progress{ID: s.Generation.Ring[0], Generation: s.Generation.Number, Step: 8}})
	if s.Status != fsm.StatusSucceeded {
		t.Fatalf("status %s after the last step, want succeeded", s.Status)
	}
	gen := s.Generation.Number
	// a finished and exited (silent); b is alive a while longer.
	now += int64(3 * time.Second)
	apply(fsm.Command{Kind: fsm.KindHeartbeat, Heartbeat: &fsm.Heartbeat{ID: "b"}})
	apply(fsm.Command{Kind: fsm.KindExpire})
	if _, ok := s.Members["a"]; ok {
		t.Fatal("a was not expired")
	}
	if s.Generation.World != 0 || s.Status != fsm.StatusSucceeded {
		t.Errorf("after the run succeeded (generation %d), expiring a member started generation %d with world %d (ring %v, from step %d; status %s); want no ring",
			gen, s.Generation.Number, s.Generation.World, s.Generation.Ring, s.Generation.StartStep, s.Status)
	}
	if a, known := coordinator.AssignmentFor(s, "b"); !known || a.Rank >= 0 || a.RunStatus != string(fsm.StatusSucceeded) {
		t.Errorf("b's assignment after the run: known %v, %v; want rank -1 and run status succeeded (the trainer leaves)", known, a)
	}
}
