package main

import (
	"log/slog"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/chaos"
	"ddpm/checkpoint"
	"ddpm/coordinator/fsm"
	"ddpm/trainer"
)

// TestFinishedWithoutKeepsDamagedUncommitted: a trainer restarted after its run finished
// without it finds its checkpoint 8 bit-flipped (a failing disk while it was down);
// trainer.UncommitDamaged uncommits it at start-up. logFinishedWithout then marks committed the
// checkpoints the cluster committed with the same sha256: the damaged copy's header still names
// the committed sha256, but its bytes do not hash to it, so it must stay uncommitted. It used to
// be marked committed again (the header alone was compared).
func TestFinishedWithoutKeepsDamagedUncommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoints.db")
	st, err := checkpoint.Open(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	shas := map[int64]string{}
	for _, step := range []int64{4, 8} {
		arena := func(k float32) []float32 {
			a := make([]float32, 1024)
			for i := range a {
				a[i] = 100*k + float32(step) + float32(i)/1024
			}
			return a
		}
		sha, err := st.Save(&checkpoint.Checkpoint{Step: step, Generation: 1, Preset: "mnist",
			Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{1024}, Len: 1024}},
			Params:  arena(0), EMA: arena(1), AdamM: arena(2), AdamV: arena(3), RNG: []byte{1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
		shas[step] = sha
	}
	st.Close()
	if step, _, err := chaos.CorruptNewestCommitted(path); err != nil || step != 8 {
		t.Fatalf("CorruptNewestCommitted: step %d, %v", step, err)
	}
	if st, err = checkpoint.Open(path, checkpoint.Options{}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	if got, err := trainer.UncommitDamaged(st, log); err != nil || !slices.Equal(got, []int64{8}) {
		t.Fatalf("UncommitDamaged = %v, %v; want [8]", got, err)
	}
	state := &fsm.State{Status: fsm.StatusSucceeded, TotalSteps: 8, Checkpoints: []fsm.Checkpoint{
		{Step: 4, SHA256: shas[4], Holders: []string{"t0", "t1"}},
		{Step: 8, SHA256: shas[8], Holders: []string{"t0", "t1"}},
	}}
	logFinishedWithout(&trainer.Node{Store: st, Log: log}, "t1", state)
	if got := committedSteps(t, st); !slices.Equal(got, []int64{4}) {
		t.Fatalf("committed after logFinishedWithout: %v, want [4] (checkpoint 8 does not verify)", got)
	}
}
