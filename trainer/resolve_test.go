package trainer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
)

// TestResolveCheckpoint: a run folder, a trainer's data dir and a checkpoint file resolve to
// the same checkpoint file and the run.yaml that describes it; a lone copy (as `ddpm checkpoint
// fetch` leaves) is refused saying which file to put beside it.
func TestResolveCheckpoint(t *testing.T) {
	run := t.TempDir()
	vol := filepath.Join(run, "trainer-0")
	if err := os.Mkdir(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	ckpt := filepath.Join(vol, CheckpointFile)
	cfg := filepath.Join(vol, ConfigFile)
	for _, p := range []string{ckpt, cfg} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, named := range []string{run, vol, ckpt} {
		file, c, err := ResolveCheckpoint(named)
		if err != nil || file != ckpt || c != cfg {
			t.Errorf("ResolveCheckpoint(%s) = %s, %s, %v; want %s, %s", named, file, c, err, ckpt, cfg)
		}
	}
	lone := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(lone, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := ResolveCheckpoint(lone)
	want := "checkpoint " + lone + ": no run.yaml beside it (nor in the folder above) to say which run it belongs to; the model is built from the run config: copy the run's run.yaml (from its run folder or the trainer's --data-dir) into " + filepath.Dir(lone)
	if err == nil || err.Error() != want {
		t.Errorf("lone copy: %v\nwant %s", err, want)
	}
	if _, _, err := ResolveCheckpoint(filepath.Join(run, "missing")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing path: %v", err)
	}
}

// TestInitFromUnreadable: a missing --init file is named as missing, not as a mismatch with
// the run; a file that is not safetensors of this model is ErrMismatch.
func TestInitFromUnreadable(t *testing.T) {
	run, ds := mnistRun(t, 20)
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.safetensors")
	err = tr.InitFrom(missing)
	if err == nil || errors.Is(err, ErrMismatch) || !errors.Is(err, fs.ErrNotExist) ||
		!strings.HasPrefix(err.Error(), "trainer: --init "+missing+": ") {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.safetensors")
	if err := os.WriteFile(junk, []byte("not safetensors"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tr.InitFrom(junk); !errors.Is(err, ErrMismatch) {
		t.Errorf("junk file: %v, want ErrMismatch", err)
	}
}

// TestRunFolderTakesNewestTrainer: a `ddpm local` run folder resolves to the trainer whose
// volume holds the newest committed checkpoint (a trainer that missed the end of the run keeps
// an older one), trainer-0 on a tie; an unreadable store does not compete.
func TestRunFolderTakesNewestTrainer(t *testing.T) {
	run := t.TempDir()
	store := func(i int, steps ...int64) string {
		t.Helper()
		dir := filepath.Join(run, fmt.Sprintf("trainer-%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, CheckpointFile)
		st, err := checkpoint.Open(path, checkpoint.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for _, s := range steps {
			const n = 64
			c := &checkpoint.Checkpoint{Step: s, Generation: 1, ConfigHash: "cfg", Preset: "tiny",
				Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{n}, Len: n}},
				Params:  make([]float32, n), EMA: make([]float32, n), AdamM: make([]float32, n), AdamV: make([]float32, n)}
			c.Params[0] = float32(s)
			if _, err := st.Save(c); err != nil {
				t.Fatal(err)
			}
			if err := st.MarkCommitted(s); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	t0 := store(0, 4)
	t1 := store(1, 4, 8)
	store(2, 4, 8, 12)
	if err := os.MkdirAll(filepath.Join(run, "trainer-3"), 0o755); err != nil {
		t.Fatal(err)
	}
	t4 := filepath.Join(run, "trainer-4", CheckpointFile)
	if err := os.MkdirAll(filepath.Dir(t4), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(t4, []byte("not a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	// trainer-2 holds committed 12: it wins.
	if got, err := CheckpointFileIn(run); err != nil || got != filepath.Join(run, "trainer-2", CheckpointFile) {
		t.Fatalf("CheckpointFileIn = %s, %v; want trainer-2's store (committed step 12)", got, err)
	}
	os.RemoveAll(filepath.Join(run, "trainer-2"))
	if got, err := CheckpointFileIn(run); err != nil || got != t1 {
		t.Fatalf("CheckpointFileIn = %s, %v; want %s (committed step 8)", got, err, t1)
	}
	store(0, 8) // a tie at 8: trainer-0
	if got, err := CheckpointFileIn(run); err != nil || got != t0 {
		t.Fatalf("CheckpointFileIn = %s, %v; want %s on a tie", got, err, t0)
	}
}
