// Package lmdbtest writes LMDB environments for tests with mdb_load (Debian lmdb-utils), so that
// the fixtures come from LMDB's own tools rather than from the binding under test.
package lmdbtest

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
)

// Pair is one key/value of a fixture.
type Pair struct{ Key, Value []byte }

// Write creates the LMDB environment dir (data.mdb, lock.mdb) holding pairs, through mdb_load.
func Write(dir string, pairs []Pair) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	size := 1 << 20
	for _, p := range pairs {
		size += 2 * (len(p.Key) + len(p.Value) + 64)
	}
	var in bytes.Buffer
	fmt.Fprintf(&in, "VERSION=3\nformat=bytevalue\ntype=btree\nmapsize=%d\nHEADER=END\n", size+(1<<20))
	for _, p := range pairs {
		fmt.Fprintf(&in, " %s\n %s\n", hex.EncodeToString(p.Key), hex.EncodeToString(p.Value))
	}
	in.WriteString("DATA=END\n")
	cmd := exec.Command("mdb_load", dir)
	cmd.Stdin = &in
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mdb_load %s: %v: %s (install Debian lmdb-utils)", dir, err, out)
	}
	return nil
}
