package trainer

import (
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ddpm/checkpoint"
)

// TestUncommitForgotten: a volume holds committed checkpoints at 4 (a rollback's target, the
// range's Above), 8 and 12 (in the forgotten range 5..16, written by generation 1), 16 (in
// the range, written by generation 5, the state's own) and 20 (after the range). Only 8 is
// uncommitted while 12 is the line's (same step and sha256); once the line no longer names 12
// (another sha256 at 12), 12 goes too. 4, 16 and 20 stay committed throughout.
func TestUncommitForgotten(t *testing.T) {
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	shas := map[int64]string{}
	for _, c := range []struct {
		step int64
		gen  uint64
	}{{4, 1}, {8, 1}, {12, 1}, {16, 5}, {20, 1}} {
		arena := func() []float32 { return []float32{float32(c.step), 1} }
		sha, err := st.Save(&checkpoint.Checkpoint{Step: c.step, Generation: c.gen, Preset: "mnist",
			Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{2}, Len: 2}},
			Params:  arena(), EMA: arena(), AdamM: arena(), AdamV: arena(), RNG: []byte{1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(c.step); err != nil {
			t.Fatal(err)
		}
		shas[c.step] = sha
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	f := ForgottenAbandoned{Ranges: []StepRange{{Above: 0, UpTo: 2}, {Above: 4, UpTo: 16}}, Generation: 5,
		Line: []CommittedCheckpoint{{Step: 12, SHA256: shas[12]}, {Step: 20, SHA256: shas[20]}}}
	done, err := UncommitForgotten(st, f, log)
	if err != nil || !slices.Equal(done, []int64{8}) {
		t.Fatalf("UncommitForgotten: %v, %v; want [8]", done, err)
	}
	f.Line[0].SHA256 = shas[8]
	if done, err = UncommitForgotten(st, f, log); err != nil || !slices.Equal(done, []int64{12}) {
		t.Fatalf("UncommitForgotten with another 12 on the line: %v, %v; want [12]", done, err)
	}
	if got, err := st.Committed(); err != nil || !slices.Equal(got, []int64{4, 16, 20}) {
		t.Fatalf("committed after: %v, %v; want [4 16 20]", got, err)
	}
	want := `msg="` + MsgUncommittedAbandoned + `" step=8 sha256=` + shas[8] +
		` why="the run was rolled back to step 4 past steps 5..16, whose abandoned checkpoints the cluster no longer lists; this volume's copy is no restart point and not the run's model"`
	if n := strings.Count(logs.String(), MsgUncommittedAbandoned); n != 2 || !strings.Contains(logs.String(), want) {
		t.Fatalf("log has %d uncommit lines, want 2, one with\n%s\ngot:\n%s", n, want, logs.String())
	}
}
