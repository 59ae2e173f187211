package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// racedSet is a Dataset whose first Pixels call makes out (holding a file), as a second
// ddpm dataset prepare into the same --out, started at once and done first, would.
type racedSet struct {
	Dataset
	out  string
	once sync.Once
}

func (r *racedSet) Pixels(i int, dst []uint8) error {
	r.once.Do(func() {
		os.MkdirAll(r.out, 0o755)
		os.WriteFile(filepath.Join(r.out, indexName), []byte("{}\n"), 0o644)
	})
	return r.Dataset.(Pixeler).Pixels(i, dst)
}

// TestPrepareOutMadeMeanwhile: when --out appears while Prepare decodes (two prepares into one
// folder at once), the one that finishes second is ErrExists in the words of the check made at
// its start, leaves the other's folder as it was and no temporary folder behind. It was
// "prepare OUT: rename .OUT.tmpNNN OUT: file exists", exit status 1.
func TestPrepareOutMadeMeanwhile(t *testing.T) {
	src := filepath.Join(t.TempDir(), "grey")
	writeLevels(t, src, true)
	ds, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "prepared")
	_, err = Prepare(&racedSet{Dataset: ds, out: out}, out, 0)
	want := "output exists: " + out + ": made by another process while this prepare ran (a second ddpm dataset prepare into it?); refusing to overwrite; choose a new --out"
	if !errors.Is(err, ErrExists) || err == nil || err.Error() != want {
		t.Fatalf("Prepare: %v, want %s", err, want)
	}
	if b, _ := os.ReadFile(filepath.Join(out, indexName)); string(b) != "{}\n" {
		t.Errorf("the other folder's index.json is now %q", b)
	}
	if entries, _ := os.ReadDir(parent); len(entries) != 1 {
		t.Errorf("%s holds %d entries, want only %s (no temporary folder)", parent, len(entries), out)
	}
}
