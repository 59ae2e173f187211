package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// needBytes is what the bbolt metadata of the file at path says its pages take (high-water
// mark times page size): the least a whole file can be.
func needBytes(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// An 8 MB checkpoint (500,000 floats in each of 4 arenas). Compact used to leave bbolt's map
// size behind (8,388,608 bytes for 8.04 MB of pages, so an 8.0 MB file became 8.4 MB); it now
// cuts the copy to its pages, shrinks a pruned file, and leaves an already compact file as it is.
func TestCompactS24NeverGrows(t *testing.T) {
	dir := t.TempDir()
	const n = 500_000

	// A pruned store: three 8 MB checkpoints saved, two pruned, so most of the file is free pages.
	pruned := filepath.Join(dir, "pruned.db")
	s, err := Open(pruned, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sum string
	for step := int64(1); step <= 3; step++ {
		if sum, err = s.Save(testState(step, n)); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prune(1, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	before, after, err := Compact(pruned, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pruned: %d -> %d bytes", before, after)
	if before < 3*8_000_000 || after >= before {
		t.Fatalf("pruned file: %d -> %d bytes, want 3 checkpoints' worth -> fewer", before, after)
	}
	if got, need := fileSize(t, pruned), needBytes(t, pruned); got != after || got != need {
		t.Fatalf("compacted file is %d bytes (Compact said %d); its pages take %d", got, after, need)
	}
	if after != 8044544 {
		t.Fatalf("compacted file is %d bytes, want 8044544 (its pages; bbolt's map size was 8388608)", after)
	}
	r, err := Open(pruned, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.LatestCommitted()
	r.Close()
	if err != nil || c.Step != 3 || c.SHA256 != sum {
		t.Fatalf("after compact: %v, %v; want step 3 sha256 %s", c, err, sum)
	}

	// Compacting the compact file again changes nothing, byte for byte.
	was, err := os.ReadFile(pruned)
	if err != nil {
		t.Fatal(err)
	}
	before, after, err = Compact(pruned, Options{})
	if err != nil || before != 8044544 || after != 8044544 {
		t.Fatalf("second compact: %d -> %d bytes, %v; want 8044544 -> 8044544", before, after, err)
	}
	if now, _ := os.ReadFile(pruned); !bytes.Equal(now, was) {
		t.Fatal("second compact changed the file")
	}
	if _, err := os.Stat(pruned + ".compact"); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}

	// A file cut to its own pages (no preallocated tail) is never made larger.
	tight := filepath.Join(dir, "tight.db")
	if s, err = Open(tight, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Save(testState(1, n)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Truncate(tight, needBytes(t, tight)); err != nil {
		t.Fatal(err)
	}
	before, after, err = Compact(tight, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tight: %d -> %d bytes", before, after)
	if after > before || fileSize(t, tight) != after {
		t.Fatalf("tight file: %d -> %d bytes (on disk %d), want no larger", before, after, fileSize(t, tight))
	}
}
