package localrun

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFolderKind: the one rule dataset.Open, coordinator.CheckDataDir and the trainer's
// --data-dir check judge a folder by. A run folder is known by its manifest or by its first
// trainer's volume; the run's own trainer-I folder is a trainer's folder and its coordinator-I
// folder is none of ddpm's kinds (a coordinator's raft data is what it should hold).
func TestFolderKind(t *testing.T) {
	root := t.TempDir()
	touch := func(p ...string) string {
		f := filepath.Join(append([]string{root}, p...)...)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return filepath.Dir(f)
	}
	manifestOnly := touch("a", ManifestFile)
	volumeOnly := filepath.Dir(touch("b", "trainer-0", "checkpoints.db"))
	run := touch("c", ManifestFile)
	touch("c", "trainer-1", "checkpoints.db")
	touch("c", "coordinator-0", "raft.db")
	cases := []struct {
		dir, want string
	}{
		{manifestOnly, KindRunFolder},
		{volumeOnly, KindRunFolder},
		{filepath.Join(root, "b", "trainer-0"), KindTrainerFolder},
		{filepath.Join(run, "trainer-1"), KindTrainerFolder},
		{filepath.Join(run, "coordinator-0"), ""},
		{filepath.Join(root, "missing"), ""},
		{root, ""},
	}
	for _, c := range cases {
		if got := FolderKind(c.dir); got != c.want {
			t.Errorf("FolderKind(%s) = %q, want %q", c.dir, got, c.want)
		}
		if got := IsRunFolder(c.dir); got != (c.want == KindRunFolder) {
			t.Errorf("IsRunFolder(%s) = %v", c.dir, got)
		}
	}
}
