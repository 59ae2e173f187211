package trainer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	want := "no run.yaml beside it to say which run it belongs to (a copy made with `ddpm checkpoint fetch`? copy the run's run.yaml, from its run folder or a trainer's --data-dir, into " + filepath.Dir(lone) + ")"
	if err == nil || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("lone copy: %v\nwant suffix %s", err, want)
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
