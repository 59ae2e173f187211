package dataset

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writePreparedIndex writes idx as dir/index.json and, for each shard of idx, a file of
// sh.Bytes bytes: a shard header that agrees with idx (count, shape, labels flag), then zeros.
func writePreparedIndex(t *testing.T, dir string, idx Index) {
	t.Helper()
	for _, sh := range idx.Shards {
		var hdr [shardHeader]byte
		copy(hdr[:], shardMagic)
		flags := uint32(0)
		if idx.Labeled {
			flags = flagLabels
		}
		for k, v := range []uint32{uint32(sh.Count), uint32(idx.Shape[0]), uint32(idx.Shape[1]), uint32(idx.Shape[2]), flags} {
			binary.LittleEndian.PutUint32(hdr[8+4*k:], v)
		}
		body := make([]byte, max(shardHeader, sh.Bytes))
		copy(body, hdr[:])
		if err := os.WriteFile(filepath.Join(dir, sh.File), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, indexName), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// openNoPanic is Open, with a panic turned into an error naming it.
func openNoPanic(spec string) (ds Dataset, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return Open(spec, Options{})
}

// TestPreparedHostileIndexRefused: an index.json whose numbers no shard backs is refused with
// ErrFormat before anything is allocated or read from them. A count of 2^61 made Open panic
// (makeslice: cap out of range: the labels were allocated from the count before any shard was
// checked; 2^36 would have died of "fatal error: out of memory"), and a shape of 2^21 on each
// side, whose record size c*h*w wraps to -2^63 (and times 2 records to 0), passed every check
// with a 40-byte shard, leaving a dataset whose first read panics.
func TestPreparedHostileIndexRefused(t *testing.T) {
	cases := map[string]Index{
		"count 2^61": {Count: 1 << 61, Shape: [3]int{1, 1, 1}, PerShard: 1, Labeled: true,
			Shards: []Shard{{File: "shard-00000.bin", Count: 1, Bytes: shardHeader + 1 + 4}}},
		"wrapping shape": {Count: 2, Shape: [3]int{1 << 21, 1 << 21, 1 << 21}, PerShard: 2, Labeled: true,
			Shards: []Shard{{File: "shard-00000.bin", Count: 2, Bytes: shardHeader + 8}}},
	}
	for name, idx := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			idx.Format, idx.Version, idx.Name = preparedKind, preparedVer, "hostile"
			writePreparedIndex(t, dir, idx)
			_, err := openNoPanic(dir)
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("Open = %v, want ErrFormat", err)
			}
		})
	}
}
