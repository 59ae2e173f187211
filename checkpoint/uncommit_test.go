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

// TestUncommitIfChecksTheMark: UncommitIf removes a commit mark only when it records the given
// sha256; a recomputed checkpoint committed after the caller listed the abandoned copy keeps its
// mark, and a read-only store refuses.
func TestUncommitIfChecksTheMark(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	abandoned := saveT(t, s, testState(20, 64))
	if err := s.MarkCommitted(20); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.UncommitIf(20, abandoned); err != nil || !ok {
		t.Fatalf("UncommitIf(20, its own sha256) = %v, %v; want true, nil", ok, err)
	}
	recomputed := testState(20, 64)
	recomputed.Params[0] = 4321
	sum := saveT(t, s, recomputed)
	if sum == abandoned {
		t.Fatal("the recomputed state hashes like the abandoned one; the test needs them apart")
	}
	if err := s.MarkCommitted(20); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.UncommitIf(20, abandoned); err != nil || ok {
		t.Fatalf("UncommitIf(20, the abandoned sha256) over the recomputed commit = %v, %v; want false, nil", ok, err)
	}
	if got, _ := s.Committed(); !slices.Equal(got, []int64{20}) {
		t.Fatalf("committed after a refused UncommitIf: %v, want [20]", got)
	}
	if ok, err := s.UncommitIf(30, abandoned); err != nil || ok {
		t.Fatalf("UncommitIf of a step not stored = %v, %v; want false, nil", ok, err)
	}
	s.Close()
	r := openT(t, s.Path(), Options{ReadOnly: true})
	if _, err := r.UncommitIf(20, sum); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("UncommitIf on a read-only store: %v, want ErrReadOnly", err)
	}
}
