package chaos

import (
	"errors"
	"math"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
)

func testCheckpoint(step int64) *checkpoint.Checkpoint {
	const n = 4096
	c := &checkpoint.Checkpoint{Step: step, Generation: 1, ConfigHash: "cfg", Preset: "tiny",
		Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{n}, Offset: 0, Len: n}},
		Params:  make([]float32, n), EMA: make([]float32, n), AdamM: make([]float32, n), AdamV: make([]float32, n),
		OptStep: step, RNG: []byte{1, 2, 3}, Cursor: uint64(8 * step)}
	for i := range n {
		x := float64(i) + float64(step)/7
		c.Params[i], c.EMA[i] = float32(math.Sin(x)), float32(math.Cos(x))
		c.AdamM[i], c.AdamV[i] = float32(x/1e4), float32(x*x/1e9)
	}
	return c
}

// TestRefetchRepairsCorruptCommitted pins the bug the first chaos run found: a trainer whose
// newest committed checkpoint was damaged on its volume fetches the good copy from a peer
// (checkpoint.Fetch = Download + Save + MarkCommitted), but Save, seeing the step committed with
// the same sha256, kept the damaged body; the trainer's next Get failed again and it exited, and
// with min_trainers = world the cluster waited for it forever. Saving the good copy over a
// damaged committed one must repair it.
func TestRefetchRepairsCorruptCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoints.db")
	st, err := checkpoint.Open(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := testCheckpoint(8)
	sum, err := st.Save(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(8); err != nil {
		t.Fatal(err)
	}
	st.Close()

	step, off, err := CorruptNewestCommitted(path)
	if err != nil || step != 8 {
		t.Fatalf("CorruptNewestCommitted: step %d, %v", step, err)
	}
	t.Logf("flipped a bit of step 8 at byte %d", off)
	if st, err = checkpoint.Open(path, checkpoint.Options{}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Verify(8); !errors.Is(err, checkpoint.ErrCorruptCheckpoint) {
		t.Fatalf("Verify of the damaged copy: %v, want ErrCorruptCheckpoint", err)
	}
	// What Fetch does with the verified copy from a peer.
	again, err := st.Save(testCheckpoint(8))
	if err != nil || again != sum {
		t.Fatalf("Save of the good copy: %s, %v (want %s)", again, err, sum)
	}
	if err := st.MarkCommitted(8); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(8)
	if err != nil {
		t.Fatalf("Get after saving the good copy over the damaged one: %v", err)
	}
	if got.SHA256 != sum || got.Params[100] != good.Params[100] {
		t.Fatalf("repaired checkpoint: sha256 %s, params[100] %v; want %s, %v", got.SHA256, got.Params[100], sum, good.Params[100])
	}
}
