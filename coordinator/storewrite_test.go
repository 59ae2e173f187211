package coordinator

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"ddpm/internal/testutil"
)

// breakWrites makes every later write to path by this process fail with EBADF, as a disk that
// went read-only would: the descriptor bbolt holds open on it is replaced (dup3) by one opened
// read-only on the same file, so reads and the mmap go on.
func breakWrites(t *testing.T, path string) { t.Helper(); swapDescriptor(t, path, os.O_RDONLY) }

// restoreWrites undoes breakWrites: the descriptor open on path is replaced by one opened for
// reading and writing, as a disk that takes writes again.
func restoreWrites(t *testing.T, path string) { t.Helper(); swapDescriptor(t, path, os.O_RDWR) }

// swapDescriptor replaces the one descriptor of this process open on path with one opened on the
// same file with flag (dup3), keeping its number; it fails the test unless exactly one was open.
func swapDescriptor(t *testing.T, path string, flag int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd == int(f.Fd()) {
			continue
		}
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == path {
			if err := syscall.Dup3(int(f.Fd()), fd, syscall.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d descriptors open on %s, want 1", n, path)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStoreWriteFailures: three real replicas (TCP raft, bbolt files); one follower's raft.db
// stops taking writes. While it cannot store the entries it receives it says so once in its log
// (MsgStoreFailing, rate-limited), its /readyz answers 503 naming the file and /healthz stays 200
// with the failure noted. When a new leader's term reaches it, raft cannot store the term: the
// replica ends with a *StoreWriteError on Fatal (ddpm coordinator: one line, exit 1) and closes;
// the other two keep the run. Before: nothing in the log, "ok n1 follower", then raft's "panic:
// failed to save current term" (the process died, exit 2).
func TestStoreWriteFailures(t *testing.T) {
	addrs := freeAddrs(t, 9)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{ID: "n" + strconv.Itoa(i), RaftAddr: addrs[3*i], GRPCAddr: addrs[3*i+1]})
	}
	var nodes []*Node
	var logs []*testutil.SyncBuffer
	for i, p := range peers {
		buf := &testutil.SyncBuffer{}
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, HTTPAddr: addrs[3*i+2], Peers: peers,
			DataDir: filepath.Join(t.TempDir(), p.ID), Bootstrap: true, Version: "v1", Security: insecureBundle(t),
			Logger: slog.New(slog.NewTextHandler(buf, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer node.Close()
		nodes, logs = append(nodes, node), append(logs, buf)
	}
	leader := -1
	for deadline := time.Now().Add(time.Minute); leader < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		for i, n := range nodes {
			if n.Replica.IsLeader() {
				leader = i
			}
		}
	}
	f, g := (leader+1)%3, (leader+2)%3
	apply := func(n *Node, k int) {
		t.Helper()
		for range k {
			if err := n.Replica.Raft().Apply([]byte("entry"), 5*time.Second).Error(); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(nodes[leader], 5)
	dbPath := filepath.Join(nodes[f].cfg.DataDir, "raft.db")
	breakWrites(t, dbPath)
	apply(nodes[leader], 50) // committed by the leader and g; f fails every append
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logs[f].String(), MsgStoreFailing); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", MsgStoreFailing, logs[f].String())
		}
	}
	apply(nodes[leader], 20)
	cause := "write " + dbPath + ": bad file descriptor"
	if got := strings.Count(logs[f].String(), MsgStoreFailing); got != 1 {
		t.Fatalf("%d store warnings, want 1 (rate-limited):\n%s", got, logs[f].String())
	}
	if want := `file=` + dbPath + ` err="` + cause + `"`; !strings.Contains(logs[f].String(), want) {
		t.Fatalf("warning does not name %s:\n%s", want, logs[f].String())
	}
	base := "http://" + addrs[3*f+2]
	if code, body := httpGet(t, base+"/readyz"); code != 503 || body != "not ready "+peers[f].ID+" follower: "+MsgStoreFailing+": "+dbPath+": "+cause+"\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, body := httpGet(t, base+"/healthz"); code != 200 || body != "ok "+peers[f].ID+" follower; "+MsgStoreFailing+": "+dbPath+": "+cause+"\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+addrs[3*g+2]+"/readyz"); code != 200 || body != "ready "+peers[g].ID+" follower\n" {
		t.Fatalf("healthy replica /readyz: %d %q", code, body)
	}
	// A new term reaches f: raft must store it and cannot.
	if err := nodes[leader].Replica.Raft().LeadershipTransferToServer(raft.ServerID(peers[g].ID), raft.ServerAddress(peers[g].RaftAddr)).Error(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-nodes[f].Fatal():
		var sw *StoreWriteError
		if !errors.As(err, &sw) || !errors.Is(err, ErrStoreWrite) {
			t.Fatalf("Fatal: %v (%T), want a *StoreWriteError", err, err)
		}
		want := "coordinator: cannot write " + dbPath + " (raft's CurrentTerm): " + cause + ": this replica stops, the others keep the run; " +
			"free or repair the disk and start it again (a damaged raft.db: move its --data-dir aside, the replica catches up from its peers)"
		if err.Error() != want {
			t.Fatalf("Fatal:\n%s\nwant\n%s", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Fatal from the replica that cannot store its term")
	}
	closed := make(chan error, 1)
	go func() { closed <- nodes[f].Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close of the failed replica hangs")
	}
	// The other two keep the run.
	for deadline := time.Now().Add(time.Minute); !nodes[g].Replica.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is not the leader", peers[g].ID)
		}
	}
	apply(nodes[g], 5)
}
