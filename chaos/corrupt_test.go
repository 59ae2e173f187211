package chaos

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/checkpoint"
	"ddpm/trainer"
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

// TestStartupUncommitsDamaged pins what the elastic chaos run found: trainer-1's newest committed
// checkpoint (56) was damaged while it was down; it came back, the run went on from step 96,
// which it fetched, and finished; the damaged 56 stayed on its volume marked committed (the run
// never needed it again), where the check that every committed checkpoint verifies failed, as
// sample --step 56 would. A trainer starting up uncommits a damaged committed checkpoint, with
// one line, and leaves the good ones.
func TestStartupUncommitsDamaged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoints.db")
	st, err := checkpoint.Open(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{52, 56} {
		if _, err := st.Save(testCheckpoint(step)); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if step, _, err := CorruptNewestCommitted(path); err != nil || step != 56 {
		t.Fatalf("CorruptNewestCommitted: step %d, %v", step, err)
	}

	if st, err = checkpoint.Open(path, checkpoint.Options{}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logged bytes.Buffer
	got, err := trainer.UncommitDamaged(st, slog.New(slog.NewJSONHandler(&logged, nil)))
	if err != nil || !slices.Equal(got, []int64{56}) {
		t.Fatalf("UncommitDamaged = %v, %v; want [56]", got, err)
	}
	if c, err := st.Committed(); err != nil || !slices.Equal(c, []int64{52}) {
		t.Fatalf("committed after UncommitDamaged: %v, %v; want [52]", c, err)
	}
	var line struct {
		Level, Msg string
		Step       int64
		Err        string
	}
	if err := json.Unmarshal(logged.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logged.String(), err)
	}
	if line.Level != "WARN" || line.Msg != trainer.MsgUncommittedDamaged || line.Step != 56 || bytes.Count(logged.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("log %q, want one WARN %q line for step 56", logged.String(), trainer.MsgUncommittedDamaged)
	}
	// The damaged copy can still be replaced by a holder's (what Fetch does), and committed.
	if _, err := st.Save(testCheckpoint(56)); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(56); err != nil {
		t.Fatal(err)
	}
	if err := st.Verify(56); err != nil {
		t.Fatalf("step 56 after the refetch: %v", err)
	}
	// Nothing damaged: nothing to do, nothing said.
	logged.Reset()
	if got, err := trainer.UncommitDamaged(st, slog.New(slog.NewJSONHandler(&logged, nil))); err != nil || got != nil || logged.Len() != 0 {
		t.Fatalf("second UncommitDamaged = %v, %v, log %q; want nothing", got, err, logged.String())
	}
}
