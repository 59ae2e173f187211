package checkpoint

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// TestUncommitLetsRecomputedStateReplace: a committed step that a rollback abandoned is
// uncommitted; it stays readable, is no longer the newest committed checkpoint, and the
// recomputed state of the same step (another sha256) replaces it, which a committed step
// refuses with ErrConflict. Uncommitting an uncommitted or absent step does nothing.
func TestUncommitLetsRecomputedStateReplace(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	for _, step := range []int64{10, 20} {
		saveT(t, s, testState(step, 64))
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	recomputed := testState(20, 64)
	recomputed.Params[0] = 4321
	if _, err := s.Save(recomputed); !errors.Is(err, ErrConflict) {
		t.Fatalf("saving over committed step 20: %v, want ErrConflict", err)
	}
	if err := s.Uncommit(20); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Committed(); !slices.Equal(got, []int64{10}) {
		t.Fatalf("committed after Uncommit(20): %v, want [10]", got)
	}
	if c, err := s.LatestCommitted(); err != nil || c.Step != 10 {
		t.Fatalf("LatestCommitted: %v %v", c, err)
	}
	if c, err := s.Get(20); err != nil || c.Params[0] == 4321 {
		t.Fatalf("the uncommitted step 20 is no longer readable as it was: %v", err)
	}
	sum := saveT(t, s, recomputed)
	if c, err := s.Get(20); err != nil || c.SHA256 != sum || c.Params[0] != 4321 {
		t.Fatalf("recomputed step 20 not stored: %v", err)
	}
	for _, step := range []int64{20, 30} {
		if err := s.Uncommit(step); err != nil {
			t.Fatalf("Uncommit(%d) of a step not committed: %v", step, err)
		}
	}
	ro := openT(t, filepath.Join(t.TempDir(), "ro.db"), Options{})
	ro.Close()
	r := openT(t, ro.Path(), Options{ReadOnly: true})
	if err := r.Uncommit(10); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Uncommit on a read-only store: %v", err)
	}
}
