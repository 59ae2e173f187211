package coordinator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// raftDataWithSnapshot makes a single replica's data dir (real raft, real bbolt) holding 400
// entries of 1 KB, a snapshot at entry ~400 and a log compacted behind it (first index > 1),
// then 20 entries more. It returns the dir and the replica's peer.
func raftDataWithSnapshot(t *testing.T) (string, Peer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	addrs := freeAddrs(t, 2)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	rc := FastRaftConfig(p.ID)
	rc.TrailingLogs = 16
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: dir, Bootstrap: true, Version: "v1", Raft: rc, Security: insecureBundle(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	r := node.Replica.Raft()
	for deadline := time.Now().Add(time.Minute); !node.Replica.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	entry := bytes.Repeat([]byte("x"), 1000)
	for i := range 420 {
		if err := r.Apply(entry, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		if i == 399 {
			if err := r.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, p
}

// pokeBoltPage writes v (-1: the page's own id) as a little-endian integer at offset off of the
// first page of the bbolt file path that bbolt lists as typ ("leaf", "branch"): 4 bytes at a
// leaf element's field, 8 at a branch element's child.
func pokeBoltPage(t *testing.T, path, typ string, off int64, v int64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, PreLoadFreelist: true})
	if err != nil {
		t.Fatal(err)
	}
	id, psz := -1, db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		for i := 2; id < 0; i++ {
			pi, err := tx.Page(i)
			if err != nil || pi == nil {
				return fmt.Errorf("no %s page: %v", typ, err)
			}
			if pi.Type == typ {
				id = i
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v < 0 {
		v = int64(id)
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(v))
	if typ == "leaf" {
		b = b[:4]
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(id*psz)+off); err != nil {
		t.Fatal(err)
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// snapshotDir is the one snapshot directory under dir/snapshots.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join(dir, "snapshots", e.Name()))
		}
	}
	if len(out) != 1 {
		t.Fatalf("snapshots: %v, want one", out)
	}
	return out[0]
}

// TestDamagedRaftDataOneLine: a real `ddpm coordinator` on raft data damaged as a full disk or
// an I/O error leaves it (raft.db truncated or zeroed in part, a snapshot's meta.json or
// state.bin damaged, the snapshots gone after compaction) exits 1 with one line naming the file
// and the remedy. Before: a SIGSEGV (raft.db truncated to 8192 bytes), bbolt's "panic:
// assertion failed: Page expected to be ...", raft's "panic: log not found" (exit 2, which
// ddpm local takes for a config conflict), "bad file descriptor" for an empty raft.db, and
// "failed to load any existing snapshots" naming no file.
func TestDamagedRaftDataOneLine(t *testing.T) {
	bin := ddpmBinary(t)
	good, p := raftDataWithSnapshot(t)
	db := func(dir string) string { return filepath.Join(dir, "raft.db") }
	truncate := func(size int64) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			if err := os.Truncate(db(dir), size); err != nil {
				t.Fatal(err)
			}
			return db(dir)
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string) string // returns the path the line must name
		why    string                                // regexp of the parenthesised cause
	}{
		{"raft.db truncated to 8192", truncate(8192), `8192 bytes long, its pages need \d+`},
		{"raft.db truncated to 12288", truncate(12288), `12288 bytes long, its pages need \d+`},
		{"raft.db truncated to 65536", truncate(65536), `65536 bytes long, its pages need \d+`},
		{"raft.db empty", truncate(0), `the file is empty`},
		{"raft.db pages zeroed", func(t *testing.T, dir string) string {
			f, err := os.OpenFile(db(dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, pg := range []int64{2, 3, 4, 5, 10} {
				if _, err := f.WriteAt(make([]byte, 4096), pg*4096); err != nil {
					t.Fatal(err)
				}
			}
			return db(dir)
		}, `bbolt check: .+`},
		// bbolt's Check reads these through its memory map on its own goroutine: a key past the
		// map faulted there (SIGSEGV, exit 2 with a trace), a cycle overflowed its stack.
		{"raft.db leaf key past the file", func(t *testing.T, dir string) string {
			pokeBoltPage(t, db(dir), "leaf", 16+4, 0x10000000) // element 0's pos: 256 MiB on
			return db(dir)
		}, `bbolt check: page \d+: leaf element 0's key and value overrun the page`},
		{"raft.db branch page pointing at itself", func(t *testing.T, dir string) string {
			pokeBoltPage(t, db(dir), "branch", 16+8, -1) // element 0's child: the page itself
			return db(dir)
		}, `bbolt check: page \d+: reached twice`},
		{"meta.json empty", func(t *testing.T, dir string) string {
			meta := filepath.Join(snapshotDir(t, dir), "meta.json")
			if err := os.WriteFile(meta, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return meta
		}, `raft.db's log starts at entry \d+ but no readable snapshot holds the entries before it`},
		{"snapshots emptied", func(t *testing.T, dir string) string {
			if err := os.RemoveAll(snapshotDir(t, dir)); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "snapshots")
		}, `raft.db's log starts at entry \d+ but no readable snapshot holds the entries before it`},
		{"state.bin damaged", func(t *testing.T, dir string) string {
			state := filepath.Join(snapshotDir(t, dir), "state.bin")
			b, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(state, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return state
		}, `no snapshot can be read back \(state.bin does not match the CRC its meta.json records\)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			copyTree(t, good, dir)
			path := c.damage(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "coordinator", "--insecure", "--id", p.ID, "--raft-addr", p.RaftAddr,
				"--grpc-addr", p.GRPCAddr, "--peers", p.ID+"="+p.RaftAddr+"="+p.GRPCAddr, "--bootstrap", "--data-dir", dir)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			want := "^ddpm: coordinator: " + regexp.QuoteMeta(path) + " is damaged \\(" + c.why + "\\): move --data-dir " +
				regexp.QuoteMeta(dir) + " aside and start this replica again with the same --id and --peers, it catches up " +
				"from the other replicas; a run's only replica cannot: restore " + regexp.QuoteMeta(dir) +
				" from a copy or start the run anew on an empty --data-dir\n$"
			if !regexp.MustCompile(want).MatchString(stderr.String()) {
				t.Fatalf("stderr:\n%s\nwant one line matching\n%s", stderr.String(), want)
			}
		})
	}
	// The undamaged data starts.
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: good, Version: "v1", Security: insecureBundle(t)})
	if err != nil {
		t.Fatalf("undamaged data: %v", err)
	}
	node.Close()
}
