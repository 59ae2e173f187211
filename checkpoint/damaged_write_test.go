package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// zeroPage overwrites page n (bbolt's page size, the OS's: os.Getpagesize) of the file at path
// with zeros, as a bad sector read back as zeros or a stray write does.
func zeroPage(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps := os.Getpagesize()
	if _, err := f.WriteAt(make([]byte, ps), int64(n*ps)); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedPageWriteIsError: a file of three small committed checkpoints with page 2 or 3
// zeroed (pages 0 and 1 are bbolt's meta pages; these hold the buckets' pages) opens, and Prune
// returns one error that is ErrStorage and ErrCorruptCheckpoint and says to move the file aside,
// without a panic; the store stays usable (Close). Prune panicked inside bbolt's DeleteBucket
// ("assertion failed: Page expected to be: 2, but self identifies as 0"), which killed the
// trainer with a Go trace and exit status 2.
func TestDamagedPageWriteIsError(t *testing.T) {
	for _, page := range []int{2, 3} {
		path := filepath.Join(t.TempDir(), "ckpt.db")
		s := openT(t, path, Options{})
		for _, step := range []int64{4, 8, 12} {
			saveT(t, s, testState(step, 300))
			if err := s.MarkCommitted(step); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		zeroPage(t, path, page)
		s = openT(t, path, Options{})
		_, err := s.Prune(1, 0)
		want := fmt.Sprintf("checkpoint: prune %s: the file is damaged (bbolt: assertion failed: Page expected to be: %d, but self identifies as 0) "+
			"and cannot be written safely; move it aside: corrupt checkpoint", path, page)
		if err == nil || err.Error() != want || !errors.Is(err, ErrStorage) || !errors.Is(err, ErrCorruptCheckpoint) {
			t.Errorf("page %d zeroed: Prune = %v\nwant %s (ErrStorage, ErrCorruptCheckpoint)", page, err, want)
		}
	}
}

// TestOpenSystemErrorIsNotCorruption: a file the system cannot open (here a symbolic link to
// itself; on a failing disk EIO) is said as the system says it, once, not as a damaged
// checkpoint file: "checkpoint: PATH is not a readable checkpoint file (open PATH: ...): corrupt
// checkpoint" named the path twice and blamed the file.
func TestOpenSystemErrorIsNotCorruption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.db")
	if err := os.Symlink(path, path); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		_, err := Open(path, Options{ReadOnly: ro})
		want := fmt.Sprintf("checkpoint: open %s: too many levels of symbolic links", path)
		if err == nil || err.Error() != want || errors.Is(err, ErrCorruptCheckpoint) {
			t.Errorf("Open (read-only %v) = %v, want %q (not ErrCorruptCheckpoint)", ro, err, want)
		}
	}
}

// TestDamageWhileOpenIsError: pages zeroed under an open writer (dd ... conv=notrunc on a
// running trainer's checkpoints.db; the store's map shows the new bytes) make each of its
// reads and writes one error, ErrCorruptCheckpoint and, for a write, ErrStorage, saying to move
// the file aside: the next Save panicked in its read transaction ("assertion failed: Page
// expected to be: 3, but self identifies as 0"), outside the guard of its write, and killed the
// trainer with a Go trace and exit status 2.
func TestDamageWhileOpenIsError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt.db")
	s := openT(t, path, Options{})
	defer s.Close()
	var sha12 string
	for _, step := range []int64{4, 8, 12} {
		sha12 = saveT(t, s, testState(step, 300))
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	for p := 2; p < 40; p++ {
		zeroPage(t, path, p)
	}
	_, err := s.Save(testState(16, 300))
	want := fmt.Sprintf("checkpoint: save step 16 to %s: the file is damaged (bbolt: assertion failed: Page expected to be: ", path)
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "but self identifies as 0) and cannot be written safely; move it aside: corrupt checkpoint") ||
		!errors.Is(err, ErrStorage) || !errors.Is(err, ErrCorruptCheckpoint) {
		t.Errorf("Save = %v\nwant %s... (ErrStorage, ErrCorruptCheckpoint)", err, want)
	}
	c12 := testState(12, 300)
	c12.SHA256 = sha12
	if _, err := s.ReplaceCommitted(c12); err == nil || !errors.Is(err, ErrStorage) || !errors.Is(err, ErrCorruptCheckpoint) {
		t.Errorf("ReplaceCommitted = %v, want ErrStorage and ErrCorruptCheckpoint", err)
	}
	if _, err := s.List(); !errors.Is(err, ErrCorruptCheckpoint) {
		t.Errorf("List = %v, want ErrCorruptCheckpoint", err)
	}
}
