package trainer_test

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ddpm/chaos"
	"ddpm/checkpoint"
	"ddpm/trainer"
)

// TestUncommitDamagedStandalone: on a standalone trainer's volume (no holder elsewhere) a
// damaged committed checkpoint beside an intact one is uncommitted with one line whose why
// names the step the trainer resumes from (it promised "a holder's copy", which a standalone
// trainer has none of); once every committed checkpoint is damaged, nothing is changed and the
// error names the file, the step and to move the file aside.
func TestUncommitDamagedStandalone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "checkpoints.db")
	st, err := checkpoint.Open(path, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []int64{4, 8} {
		arena := func(k int) []float32 { // distinct bytes in every arena of every step
			a := make([]float32, 4096)
			for i := range a {
				a[i] = float32(i) + float32(step)*1e4 + float32(k)*1e6
			}
			return a
		}
		if _, err := st.Save(&checkpoint.Checkpoint{Step: step, Generation: 1, Preset: "mnist",
			Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{4096}, Len: 4096}},
			Params:  arena(0), EMA: arena(1), AdamM: arena(2), AdamV: arena(3), RNG: []byte{1}}); err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	damage := func(want int64) {
		st.Close()
		if step, _, err := chaos.CorruptNewestCommitted(path); err != nil || step != want {
			t.Fatalf("CorruptNewestCommitted: step %d, %v; want %d", step, err, want)
		}
		if st, err = checkpoint.Open(path, checkpoint.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	damage(8)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	if done, err := trainer.UncommitDamagedStandalone(st, log); err != nil || !slices.Equal(done, []int64{8}) {
		t.Fatalf("UncommitDamagedStandalone = %v, %v; want [8]", done, err)
	}
	want := `why="no restart point: the trainer resumes from its newest intact checkpoint, step 4"`
	if strings.Count(logs.String(), "\n") != 1 || !strings.Contains(logs.String(), `level=WARN msg="`+trainer.MsgUncommittedDamaged+`" step=8 `) ||
		!strings.HasSuffix(logs.String(), want+"\n") {
		t.Errorf("log:\n%s\nwant one WARN line for step 8 ending %s", logs.String(), want)
	}

	damage(4)
	logs.Reset()
	done, err := trainer.UncommitDamagedStandalone(st, log)
	prefix := fmt.Sprintf("trainer: this trainer's volume: every committed checkpoint in %s is damaged (step 4; step 4: checkpoint: %s step 4: ", path, path)
	suffix := ": corrupt checkpoint); it was left as it is: move it aside to start the run over from step 0"
	if err == nil || done != nil || !strings.HasPrefix(err.Error(), prefix) || !strings.HasSuffix(err.Error(), suffix) ||
		!errors.Is(err, trainer.ErrVolume) || !errors.Is(err, checkpoint.ErrCorruptCheckpoint) || logs.Len() != 0 {
		t.Errorf("every committed checkpoint damaged: %v, %v, log %q; want nil and %s...%s", done, err, logs.String(), prefix, suffix)
	}
	if c, err := st.Committed(); err != nil || !slices.Equal(c, []int64{4}) {
		t.Errorf("committed after the refusal: %v, %v; want [4] left as it was", c, err)
	}
	st.Close()
}
