package dataset

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenTextFileCutMidRune: a text file (UTF-8, no NUL) is refused as "a text file, not a
// dataset" even when the 4 KiB that Open sniffs end inside a multi-byte character, and a short
// one whose last bytes are no UTF-8 is not taken for text. The rule dropped the last 3 bytes
// of every head before checking it: the first case then ended mid-character, was no text, and
// got the unknown-format line; the second hid its bad bytes.
func TestOpenTextFileCutMidRune(t *testing.T) {
	dir := t.TempDir()
	// "é" is 2 bytes at offsets 4092-4093; without its last 3 bytes the 4 KiB head ends after
	// its first byte.
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte(strings.Repeat("a", 4092)+"é"+strings.Repeat("b", 100)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := notDataFile(notes); got != "a text file, not a dataset" {
		t.Errorf("notDataFile(4 KiB cut inside é) = %q, want %q", got, "a text file, not a dataset")
	}
	_, err := Open(notes, Options{})
	if err == nil || !strings.Contains(err.Error(), "a text file, not a dataset") {
		t.Errorf("Open(%s) = %v, want the text file line", notes, err)
	}
	// 8 bytes, the last two no UTF-8 (0xff never is): binary, no line about text.
	bin := filepath.Join(dir, "blob")
	if err := os.WriteFile(bin, []byte("abcdef\xff\xfe"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := notDataFile(bin); got != "" {
		t.Errorf("notDataFile(text ending in 0xff 0xfe) = %q, want \"\"", got)
	}
}
