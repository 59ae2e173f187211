package coordinator

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/testutil"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// flapStore is a guardedStore on a real raft.db in a temporary directory, logging as text into
// the returned buffer, on a clock the test moves.
func flapStore(t *testing.T) (*guardedStore, *bytes.Buffer, *time.Time) {
	t.Helper()
	dir := t.TempDir()
	bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	g := newGuardedStore(bs, filepath.Join(dir, "raft.db"), log, func(error) {})
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return clock }
	return g, &buf, &clock
}

func countLines(s, sub string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// TestStoreFailureFlapsWarnOnce: the tester's leader on a full disk, re-elected twice within
// 2.5 s, stored one small entry each time and failed again. One MsgStoreFailing, no
// MsgStoreRecovered (the old code: 3 warnings, 2 recovery lines); the recovery line once writes
// have succeeded for storeSettle; a failure after it warns again at once.
func TestStoreFailureFlapsWarnOnce(t *testing.T) {
	g, buf, clock := flapStore(t)
	full := &os.PathError{Op: "write", Path: g.path, Err: syscall.ENOSPC}
	at := func(d time.Duration) { *clock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(d) }
	entry := func(i uint64) *raft.Log {
		return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("x")}
	}

	at(0)
	g.logWrite(g.path, full)
	for i, d := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
		at(d)
		if err := g.StoreLog(entry(uint64(i + 1))); err != nil { // a real write that succeeds
			t.Fatal(err)
		}
		if err := g.Failing(); err != nil {
			t.Fatalf("Failing after a successful write = %v, want nil", err)
		}
		at(d + time.Second)
		g.logWrite(g.path, full)
	}
	out := buf.String()
	if n, m := countLines(out, MsgStoreFailing), countLines(out, MsgStoreRecovered); n != 1 || m != 0 {
		t.Fatalf("after 3 failures and 2 successes within 2.5 s: %d warnings, %d recovery lines, want 1 and 0:\n%s", n, m, out)
	}
	if err := g.Failing(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Failing = %v, want ENOSPC", err)
	}

	at(3 * time.Second)
	if err := g.StoreLog(entry(3)); err != nil {
		t.Fatal(err)
	}
	at(3*time.Second + storeSettle - time.Millisecond)
	if err := g.StoreLog(entry(4)); err != nil {
		t.Fatal(err)
	}
	if m := countLines(buf.String(), MsgStoreRecovered); m != 0 {
		t.Fatalf("recovery said before writes succeeded for %v:\n%s", storeSettle, buf.String())
	}
	at(3*time.Second + storeSettle)
	if err := g.StoreLog(entry(5)); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("level=INFO msg=%q file=%s\n", MsgStoreRecovered, g.path)
	if got := buf.String()[len(out):]; got != want {
		t.Fatalf("after writes for %v:\n%s\nwant\n%s", storeSettle, got, want)
	}

	before := buf.Len()
	at(14 * time.Second)
	g.logWrite(g.path, full)
	want = fmt.Sprintf("level=WARN msg=%q file=%s err=%q\n", MsgStoreFailing, g.path, full.Error())
	if got := buf.String()[before:]; got != want {
		t.Fatalf("a failure after the recovery line:\n%s\nwant\n%s", got, want)
	}
}

// TestSnapshotCreateFailureIsStoreFailure: a snapshot raft cannot create (here: meta.json cannot
// be written, as on a full disk) is the store's failure: MsgStoreFailing naming the snapshots
// directory, Failing set, and the NAME.tmp directory raft left removed (the tester found 7). A
// snapshot written whole clears Failing.
func TestSnapshotCreateFailureIsStoreFailure(t *testing.T) {
	g, buf, _ := flapStore(t)
	dataDir := filepath.Dir(g.path)
	fss, err := raft.NewFileSnapshotStore(dataDir, 2, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dataDir, "snapshots")
	s := &guardedSnapshots{FileSnapshotStore: fss, dir: snapDir, g: g}
	// raft writes NAME.tmp/meta.json: a directory of that name in each NAME.tmp it may pick
	// (the name ends in the current millisecond) makes the write fail after the MkdirAll.
	now := time.Now().UnixMilli()
	for ms := now; ms < now+5000; ms++ {
		if err := os.MkdirAll(filepath.Join(snapDir, fmt.Sprintf("2-40-%d.tmp", ms), "meta.json"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.Create(raft.SnapshotVersionMax, 40, 2, raft.Configuration{}, 1, nil)
	if err == nil {
		t.Fatal("Create succeeded with meta.json a directory")
	}
	want := fmt.Sprintf("level=WARN msg=%q file=%s err=%q\n", MsgStoreFailing, snapDir, err.Error())
	if got := buf.String(); got != want {
		t.Fatalf("log:\n%s\nwant\n%s", got, want)
	}
	if !strings.HasPrefix(err.Error(), "create snapshot 2-40: ") || g.Failing() == nil {
		t.Fatalf("err %v, Failing %v", err, g.Failing())
	}
	if left, _ := filepath.Glob(filepath.Join(snapDir, "*.tmp")); len(left) != 0 {
		t.Fatalf("%d .tmp directories left, e.g. %s", len(left), left[0])
	}

	sink, err := s.Create(raft.SnapshotVersionMax, 41, 2, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write([]byte("state")); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.Failing(); err != nil {
		t.Fatalf("Failing after a snapshot written whole = %v", err)
	}
}

// TestSnapshotTempsRemovedAtStart: NAME.tmp directories left in snapshots/ are removed at
// start-up, finished snapshots kept.
func TestSnapshotTempsRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"2-40-1.tmp", "2-41-2.tmp/sub", "2-39-3"} {
		if err := os.MkdirAll(filepath.Join(dir, "snapshots", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeSnapshotTemps(dir); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	if len(ents) != 1 || ents[0].Name() != "2-39-3" {
		t.Fatalf("left %v, want only 2-39-3", ents)
	}
	if err := removeSnapshotTemps(t.TempDir()); err != nil { // no snapshots/ yet
		t.Fatal(err)
	}
}

// TestSnapshotFailureNotReady: on a real replica, a snapshot raft cannot create (snapshots/
// replaced by a file: the MkdirAll fails, as an install on a full disk failed) makes /readyz
// answer 503 naming it and warns MsgStoreFailing on the node's logger; the old code left both
// to raft's own log (200 'ready').
func TestSnapshotFailureNotReady(t *testing.T) {
	addrs := freeAddrs(t, 3)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	dir := t.TempDir()
	var buf testutil.SyncBuffer
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, HTTPAddr: addrs[2], Peers: []Peer{p},
		DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t), Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	for deadline := time.Now().Add(time.Minute); !node.Replica.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
	}
	if err := node.Replica.Raft().Apply([]byte("entry"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(dir, "snapshots")
	if err := os.RemoveAll(snapDir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snapDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := node.Replica.Raft().Snapshot().Error(); err == nil {
		t.Fatal("snapshot succeeded with snapshots/ a file")
	}
	code, body := httpGet(t, "http://"+addrs[2]+"/readyz")
	if code != 503 || !strings.HasPrefix(body, "not ready n0 leader: "+MsgStoreFailing+": ") || !strings.Contains(body, "create snapshot ") ||
		!strings.Contains(body, "not a directory") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if n := countLines(buf.String(), "level=WARN msg=\""+MsgStoreFailing+"\" file="+snapDir+" "); n != 1 {
		t.Fatalf("%d warnings naming %s, want 1:\n%s", n, snapDir, buf.String())
	}
}
