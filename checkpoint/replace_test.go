package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// replacement is step 20 of testState with other bytes (a recomputed or another holder's copy)
// and its sha256, computed by saving it into a scratch store.
func replacement(t *testing.T) *Checkpoint {
	t.Helper()
	c := testState(20, 4096)
	c.Params[0] = 4321
	scratch := openT(t, filepath.Join(t.TempDir(), "scratch.db"), Options{})
	c.SHA256 = saveT(t, scratch, c)
	return c
}

// wantCommitted fails unless s lists step committed with sha256 sum (and no other step) and
// its bytes verify.
func wantCommitted(t *testing.T, s *Store, step int64, sum string) {
	t.Helper()
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].Step != step || !list[0].Committed || list[0].SHA256 != sum {
		t.Fatalf("%s lists %+v (%v), want step %d committed with sha256 %s", s.Path(), list, err, step, sum)
	}
	if c, err := s.LatestCommitted(); err != nil || c.SHA256 != sum {
		t.Fatalf("LatestCommitted: %v, want step %d with sha256 %s", err, step, sum)
	}
}

// TestReplaceCommitted: ReplaceCommitted stores a copy of a step held committed with other bytes
// and commits it in one transaction; a copy whose bytes do not hash to the sha256 it names is
// refused with ErrCorruptCheckpoint, and the held copy stays committed with its own sha256. A
// step not held is stored committed; one committed with the same sha256 is left as is.
func TestReplaceCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{})
	old := saveT(t, s, testState(20, 4096))
	if err := s.MarkCommitted(20); err != nil {
		t.Fatal(err)
	}
	c := replacement(t)
	good := c.SHA256
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", old, strings.Repeat("0", 64)} {
		c.SHA256 = bad
		_, err := s.ReplaceCommitted(c)
		want := fmt.Sprintf("checkpoint: replace step 20 in %s: the checkpoint hashes to sha256 %s, it names %q (nothing was written): corrupt checkpoint", path, good, bad)
		if !errors.Is(err, ErrCorruptCheckpoint) || err.Error() != want {
			t.Fatalf("ReplaceCommitted naming sha256 %q:\n got %v\nwant %s", bad, err, want)
		}
		wantCommitted(t, s, 20, old)
		if fi, err := os.Stat(path); err != nil || fi.Size() != before.Size() {
			t.Fatalf("after a refused replacement the file is %d bytes, was %d (%v)", fi.Size(), before.Size(), err)
		}
	}
	c.SHA256 = good
	if sum, err := s.ReplaceCommitted(c); err != nil || sum != good {
		t.Fatalf("ReplaceCommitted: %s, %v; want %s", sum, err, good)
	}
	wantCommitted(t, s, 20, good)
	if got, err := s.Get(20); err != nil || got.Params[0] != 4321 {
		t.Fatalf("step 20 after the replacement: %v", err)
	}
	if sum, err := s.ReplaceCommitted(c); err != nil || sum != good {
		t.Fatalf("ReplaceCommitted of the held copy again: %s, %v", sum, err)
	}
	wantCommitted(t, s, 20, good)

	fresh := filepath.Join(t.TempDir(), "fresh.db")
	f := openT(t, fresh, Options{})
	if sum, err := f.ReplaceCommitted(c); err != nil || sum != good {
		t.Fatalf("ReplaceCommitted into an empty store: %s, %v", sum, err)
	}
	wantCommitted(t, f, 20, good)
}

// TestReplaceCommittedFileCannotGrow: a replacement that fails because the file cannot grow (a
// child process whose file-size limit is the file's size: a full disk) leaves the held copy
// committed with its sha256 and readable. Replacing by Uncommit, then Save, then MarkCommitted,
// as ddpm checkpoint fetch --force did, left it uncommitted: no restart point.
func TestReplaceCommittedFileCannotGrow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{})
	old := saveT(t, s, testState(20, 4096))
	if err := s.MarkCommitted(20); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c := replacement(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=replacelimited", childPathEnv+"="+path, "DDPM_CHECKPOINT_TEST_SHA256="+c.SHA256)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "grow "+path+": file too large") {
		t.Fatalf("child: %v\n%s\nwant it to report the failed growth", err, out)
	}
	wantCommitted(t, openT(t, path, Options{ReadOnly: true}), 20, old)
}

// childReplaceLimited limits the files this process writes to the size of the store at path,
// then replaces its step 20 with replacement's bytes (the sha256 given by the parent) and
// prints the error.
func childReplaceLimited(path string) {
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer s.Close()
	lim := &syscall.Rlimit{Cur: uint64(fi.Size()), Max: uint64(fi.Size())}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, lim); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	c := testState(20, 4096)
	c.Params[0] = 4321
	c.SHA256 = os.Getenv("DDPM_CHECKPOINT_TEST_SHA256")
	_, err = s.ReplaceCommitted(c)
	fmt.Println("replace:", err)
}
