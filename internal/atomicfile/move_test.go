package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMoveNoReplace: a move to a free name leaves the bytes at dst and nothing at src; a move
// onto a name that exists fails with fs.ErrExist and leaves both files byte for byte, with and
// without hard links (link answering EPERM, as on FAT).
func TestMoveNoReplace(t *testing.T) {
	for _, hardLinks := range []bool{true, false} {
		if !hardLinks {
			link = func(old, new string) error { return &os.LinkError{Op: "link", Old: old, New: new, Err: syscall.EPERM} }
		}
		dir := t.TempDir()
		src, dst, taken := filepath.Join(dir, "a.db"), filepath.Join(dir, "a.db.damaged"), filepath.Join(dir, "b")
		for _, f := range []struct{ path, data string }{{src, "damaged bytes"}, {taken, "keep me"}} {
			if err := os.WriteFile(f.path, []byte(f.data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := MoveNoReplace(src, taken); !errors.Is(err, fs.ErrExist) {
			t.Errorf("hard links %v: MoveNoReplace onto an existing file: %v, want fs.ErrExist", hardLinks, err)
		}
		if err := MoveNoReplace(src, dst); err != nil {
			t.Fatalf("hard links %v: %v", hardLinks, err)
		}
		for path, want := range map[string]string{dst: "damaged bytes", taken: "keep me"} {
			if b, err := os.ReadFile(path); err != nil || string(b) != want {
				t.Errorf("hard links %v: %s holds %q, %v; want %q", hardLinks, path, b, err, want)
			}
		}
		if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("hard links %v: %s still there after the move (%v)", hardLinks, src, err)
		}
		link = os.Link
	}
}
