package trainer

import (
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
