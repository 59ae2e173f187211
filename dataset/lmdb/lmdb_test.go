package lmdb_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"ddpm/dataset/lmdb"
	"ddpm/dataset/lmdb/lmdbtest"
)

func TestReadWhatMdbLoadWrote(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	var pairs []lmdbtest.Pair
	for i := 0; i < 500; i++ {
		// 3 kB values force overflow pages; keys are written out of order to check the sort.
		k := fmt.Sprintf("key-%04d", (i*7919)%500)
		pairs = append(pairs, lmdbtest.Pair{Key: []byte(k), Value: bytes.Repeat([]byte{byte(i)}, 3000+i)})
	}
	pairs = append(pairs, lmdbtest.Pair{Key: []byte("zz-empty"), Value: nil})
	if err := lmdbtest.Write(dir, pairs); err != nil {
		t.Fatal(err)
	}
	env, err := lmdb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	if n, err := env.Entries(); err != nil || n != 501 {
		t.Fatalf("Entries = %d, %v", n, err)
	}
	want := map[string][]byte{}
	for _, p := range pairs {
		want[string(p.Key)] = p.Value
	}
	txn, err := env.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Abort()
	cur, err := txn.Cursor()
	if err != nil {
		t.Fatal(err)
	}
	prev, count := "", 0
	for {
		k, v, err := cur.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if string(k) <= prev {
			t.Fatalf("key %q after %q: not in order", k, prev)
		}
		prev = string(k)
		if !bytes.Equal(v, want[string(k)]) {
			t.Fatalf("value of %q: %d bytes, want %d", k, len(v), len(want[string(k)]))
		}
		count++
	}
	cur.Close()
	if count != 501 {
		t.Fatalf("cursor saw %d pairs", count)
	}
	v, err := txn.Get([]byte("key-0123"))
	if err != nil || !bytes.Equal(v, want["key-0123"]) {
		t.Fatalf("Get = %d bytes, %v", len(v), err)
	}
	if _, err := txn.Get([]byte("absent")); !errors.Is(err, lmdb.ErrNotFound) {
		t.Fatalf("Get(absent) = %v", err)
	}
	if v, err := txn.Get([]byte("zz-empty")); err != nil || len(v) != 0 {
		t.Fatalf("Get(empty) = %q, %v", v, err)
	}
}

func TestOpenMissingOrNotLMDB(t *testing.T) {
	dir := t.TempDir()
	if _, err := lmdb.Open(filepath.Join(dir, "absent")); err == nil {
		t.Fatal("opened a missing directory")
	}
	var e lmdb.Errno
	if _, err := lmdb.Open(dir); !errors.As(err, &e) {
		t.Fatalf("empty dir: %v (%T)", err, err)
	}
}
