package checkpoint

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestNoneYetS24: Latest of a file that holds no checkpoint says so once ("holds no checkpoint
// yet"), still ErrNoneYet and ErrNotFound under errors.Is; it read "... holds no checkpoint yet:
// checkpoint not found".
func TestNoneYetS24(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{})
	_, err := s.Latest()
	if want := "checkpoint: " + path + " holds no checkpoint yet"; err == nil || err.Error() != want ||
		!errors.Is(err, ErrNoneYet) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("Latest of an empty file: %v; want %q (ErrNoneYet, ErrNotFound)", err, want)
	}
}
