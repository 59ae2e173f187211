package dataset

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// heldSet is a Dataset whose first Pixels call says so on started and then waits for release:
// a prepare held in the middle of writing its first shard.
type heldSet struct {
	Dataset
	once             sync.Once
	started, release chan struct{}
}

func (h *heldSet) Pixels(i int, dst []uint8) error {
	h.once.Do(func() {
		close(h.started)
		<-h.release
	})
	return h.Dataset.(Pixeler).Pixels(i, dst)
}

// TestRemoveInterruptedLeavesRunningPrepare: the temporary folder of a prepare still writing
// (this process's Prepare, held in its first shard: its flock is taken through another open file
// description, as another process's would be) is not removed by RemoveInterrupted, nor is a
// temporary folder without a lock file (an older ddpm's, whose writer nothing proves gone) or a
// probe folder that is not empty; the held prepare then completes, and its folder holds no lock
// file.
func TestRemoveInterruptedLeavesRunningPrepare(t *testing.T) {
	src := filepath.Join(t.TempDir(), "grey")
	writeLevels(t, src, true)
	ds, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "prepared")
	older := filepath.Join(parent, ".prepared.tmp42")
	probe := filepath.Join(parent, ".prepare-probe-7")
	for _, d := range []string{older, probe} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(probe, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &heldSet{Dataset: ds, started: make(chan struct{}), release: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := Prepare(h, out, 0)
		done <- err
	}()
	<-h.started
	locks, _ := filepath.Glob(filepath.Join(parent, ".prepared.tmp*", prepareLock))
	if len(locks) != 1 {
		t.Fatalf("lock files of the held prepare: %v, want one", locks)
	}
	left, err := RemoveInterrupted(out)
	if len(left.Tmps) != 0 || len(left.Probes) != 0 || len(left.Unmarked) != 0 || err != nil {
		t.Fatalf("RemoveInterrupted during a prepare: %+v (%v), want nothing (the older folder is fresh)", left, err)
	}
	for _, p := range []string{locks[0], older, probe} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("after RemoveInterrupted: %v", err)
		}
	}
	close(h.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, prepareLock)); !os.IsNotExist(err) {
		t.Fatalf("the prepared folder's lock file: %v, want none", err)
	}
	if _, err := Open(out, Options{}); err != nil {
		t.Fatal(err)
	}
}
