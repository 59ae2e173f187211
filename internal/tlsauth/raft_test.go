package tlsauth

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sumFSM adds up uint64 commands; every replica must end with the same sum and count.
type sumFSM struct {
	mu         sync.Mutex
	sum, count uint64
}

func (f *sumFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sum += binary.BigEndian.Uint64(l.Data)
	f.count++
	return f.sum
}

func (f *sumFSM) state() (uint64, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sum, f.count
}

func (f *sumFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, errors.New("not used") }
func (f *sumFSM) Restore(io.ReadCloser) error         { return errors.New("not used") }

type raftNode struct {
	r     *raft.Raft
	fsm   *sumFSM
	trans *raft.NetworkTransport
	addr  raft.ServerAddress
}

// startRaft starts a raft replica on a TLS stream layer over a fresh loopback listener.
func startRaft(t *testing.T, b *Bundle, id string, ln net.Listener, peers []raft.Server) *raftNode {
	t.Helper()
	trans := raft.NewNetworkTransport(b.RaftStreamLayer(ln, nil), 3, 2*time.Second, io.Discard)
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(id)
	conf.HeartbeatTimeout = 300 * time.Millisecond
	conf.ElectionTimeout = 300 * time.Millisecond
	conf.LeaderLeaseTimeout = 150 * time.Millisecond
	conf.CommitTimeout = 10 * time.Millisecond
	conf.LogOutput = io.Discard
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	if err := raft.BootstrapCluster(conf, store, store, snaps, trans, raft.Configuration{Servers: peers}); err != nil {
		t.Fatal(err)
	}
	fsm := &sumFSM{}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	n := &raftNode{r: r, fsm: fsm, trans: trans, addr: trans.LocalAddr()}
	t.Cleanup(func() {
		r.Shutdown().Error()
		trans.Close()
	})
	return n
}

func startCluster(t *testing.T, b *Bundle, log *syncBuf) []*raftNode {
	t.Helper()
	var lns []net.Listener
	var peers []raft.Server
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		peers = append(peers, raft.Server{ID: raft.ServerID(fmt.Sprint("c", i)), Address: raft.ServerAddress(ln.Addr().String())})
	}
	var nodes []*raftNode
	for i, ln := range lns {
		nodes = append(nodes, startRaft(t, b, string(peers[i].ID), ln, peers))
	}
	return nodes
}

func leaderOf(t *testing.T, nodes []*raftNode) *raftNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.r.State() == raft.Leader {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader elected within 10s")
	return nil
}

// applyOnLeader applies data on leader, or on the next leader when leader has lost leadership
// before taking it (ErrNotLeader: nothing appended; a busy machine can delay heartbeats past the
// lease); it returns the node that applied it.
func applyOnLeader(t *testing.T, nodes []*raftNode, leader *raftNode, data []byte) *raftNode {
	t.Helper()
	for range 5 {
		err := leader.r.Apply(data, 5*time.Second).Error()
		if err == nil {
			return leader
		}
		if !errors.Is(err, raft.ErrNotLeader) {
			t.Fatalf("apply on %s: %v", leader.addr, err)
		}
		leader = leaderOf(t, nodes)
	}
	t.Fatal("leadership moved five times in a row")
	return nil
}

func TestRaftClusterOverTLS(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	nodes := startCluster(t, load(t, dir, log), log)
	leader := leaderOf(t, nodes)
	var want uint64
	for i := uint64(1); i <= 50; i++ {
		want += i * i
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], i*i)
		leader = applyOnLeader(t, nodes, leader, buf[:])
	}
	if err := leader.r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, n := range nodes {
		for {
			sum, count := n.fsm.state()
			if sum == want && count == 50 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica %s: sum %d count %d, want %d and 50", n.addr, sum, count, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s := log.String(); s != "" {
		t.Errorf("refusals logged inside a healthy cluster:\n%s", s)
	}

	// Kill the leader: the two others elect a new one over TLS and keep applying.
	leader.r.Shutdown().Error()
	leader.trans.Close()
	var rest []*raftNode
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	next := leaderOf(t, rest)
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], 7)
	if err := next.r.Apply(buf[:], 5*time.Second).Error(); err != nil {
		t.Fatalf("apply after leader loss: %v", err)
	}
	f := next.r.Apply(buf[:], 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	if got := f.Response(); got != want+14 {
		t.Errorf("sum after leader loss %v, want %d", got, want+14)
	}
}

func TestRaftStreamLayerRefusesForeignNodes(t *testing.T) {
	dir, foreign := newDir(t), newDir(t)
	log := &syncBuf{}
	nodes := startCluster(t, load(t, dir, log), log)
	leaderOf(t, nodes)
	target := raft.ServerAddress(nodes[0].addr)

	dial := func(b *Bundle) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sl := b.RaftStreamLayer(ln, nil)
		defer sl.Close()
		c, err := sl.Dial(target, 2*time.Second)
		if c != nil {
			c.Close()
		}
		return err
	}

	// A node of another cluster: it refuses our certificate and we refuse its.
	err := dial(load(t, foreign, nil))
	if err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		t.Fatalf("foreign node dialing: %v", err)
	}
	waitLog(t, log, "tlsauth: refused raft connection", "remote error: tls: bad certificate")

	// A node with a foreign certificate that trusts our CA: our replica refuses it.
	mixed := copyDir(t, dir)
	for _, n := range []string{CertFile, KeyFile} {
		b, _ := os.ReadFile(filepath.Join(foreign, n))
		os.WriteFile(filepath.Join(mixed, n), b, 0o600)
	}
	mb, err := Load(Config{Dir: mixed})
	if err == nil {
		t.Fatalf("Load accepted a node.crt from another CA (%v)", mb)
	}
	// Build that node by hand: Load rightly refuses such a directory.
	b := load(t, dir, nil)
	pair := pairOf(t, foreign)
	b.clientTLS = b.clientTLS.Clone()
	b.clientTLS.Certificates = []tls.Certificate{pair}
	err = dial(b)
	if err == nil || !strings.Contains(err.Error(), "refused the connection: remote error: tls: unknown certificate authority") {
		t.Fatalf("foreign certificate dialing: %v", err)
	}
	waitLog(t, log, "x509: certificate signed by unknown authority")

	// The right certificate and the wrong join secret.
	wrong := copyDir(t, dir)
	os.WriteFile(filepath.Join(wrong, SecretFile), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	err = dial(load(t, wrong, nil))
	if !errors.Is(err, ErrJoinSecret) || err.Error() != "tlsauth: join secret rejected: raft peer "+string(target)+" refused our join secret" {
		t.Fatalf("wrong secret dialing: %v", err)
	}
	waitLog(t, log, "presented a wrong join secret")

	// A plain-TCP raft node (--insecure) gets nowhere either.
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	psl := (&Bundle{insecure: true}).RaftStreamLayer(plainLn, nil)
	defer psl.Close()
	pc, err := psl.Dial(target, 2*time.Second)
	if err != nil {
		t.Fatalf("plain TCP dial: %v", err)
	}
	defer pc.Close()
	pc.Write([]byte("a raft RPC in plain text\n"))
	waitLog(t, log, "first record does not look like a TLS handshake")

	// The cluster is undisturbed.
	if err := leaderOf(t, nodes).r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
}
