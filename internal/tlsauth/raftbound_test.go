package tlsauth

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// boundedPort is a raft transport's accepting side on a RaftLayer over loopback: every accepted
// connection is read at once (raft's per-connection goroutine), and every AppendEntries that
// arrives is answered with Success.
type boundedPort struct {
	l    *RaftLayer
	addr string
}

func serveBounded(t *testing.T, b *Bundle) *boundedPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := b.RaftStreamLayer(ln, nil)
	trans := raft.NewNetworkTransport(l, 3, 2*time.Second, io.Discard)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case rpc := <-trans.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		trans.Close()
	})
	return &boundedPort{l: l, addr: ln.Addr().String()}
}

// stageCounts returns how many pending connections are at each stage, and whether any is from
// source src.
func (p *boundedPort) stageCounts(src string) (counts [3]int, fromSrc bool) {
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	for _, c := range p.l.pending {
		counts[c.stage.Load()]++
		fromSrc = fromSrc || c.src == src
	}
	return counts, fromSrc
}

// flood opens n TCP connections to addr from the local IP from; with hello each sends the header
// of a TLS handshake record announcing 512 bytes that never come (a handshake that stalls),
// otherwise nothing. It skips the test when from cannot be bound.
func flood(t *testing.T, addr, from string, n int, hello bool) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			if i == 0 && from != "127.0.0.1" {
				t.Skipf("cannot dial from %s: %v", from, err)
			}
			t.Fatal(err)
		}
		conns = append(conns, c)
		if hello {
			if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return conns
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// appendEntries sends one AppendEntries from a replica's own transport (a RaftLayer of b) to
// target and returns its error and whether it was answered with Success.
func appendEntries(t *testing.T, b *Bundle, target string) (bool, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransport(b.RaftStreamLayer(ln, nil), 1, 10*time.Second, io.Discard)
	defer trans.Close()
	var resp raft.AppendEntriesResponse
	err = trans.AppendEntries("n0", raft.ServerAddress(target), &raft.AppendEntriesRequest{Term: 1}, &resp)
	return resp.Success, err
}

// TestRaftLayerBoundsUnauthenticated floods a raft port (mutual TLS + join secret) with 200 TCP
// connections that send nothing: the layer keeps exactly MaxRaftPending of them and closes the
// other 136 at once (without the bound it held all 200, each with a goroutine, for the 10 s
// authentication timeout), says so in one warning line and logs no refusal for them. A replica
// then still gets its AppendEntries answered: its connection, the 65th, closes the oldest idle
// one and leaves the count when it authenticates.
func TestRaftLayerBoundsUnauthenticated(t *testing.T) {
	const n = 200
	log := &syncBuf{}
	b := load(t, newDir(t), log)
	port := serveBounded(t, b)
	conns := flood(t, port.addr, "127.0.0.1", n, false)
	waitFor(t, "136 closed", func() bool { return port.l.Closed() == n-MaxRaftPending })

	var open, eof int
	readBy := time.Now().Add(300 * time.Millisecond)
	for i, c := range conns {
		c.SetReadDeadline(readBy)
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			open++
			if i < n-MaxRaftPending {
				t.Fatalf("connection %d (of the oldest) still open", i)
			}
		case err != nil:
			eof++
		default:
			t.Fatalf("connection %d read a byte", i)
		}
	}
	if open != MaxRaftPending || eof != n-MaxRaftPending {
		t.Fatalf("flooding side: %d open, %d closed; want %d and %d", open, eof, MaxRaftPending, n-MaxRaftPending)
	}
	if p, c := port.l.Pending(), port.l.Closed(); p != MaxRaftPending || c != n-MaxRaftPending {
		t.Fatalf("after %d idle connections: %d pending, %d closed; want %d and %d", n, p, c, MaxRaftPending, n-MaxRaftPending)
	}
	s := log.String()
	if strings.Count(s, MsgRaftPendingFull) != 1 || !strings.Contains(s, "limit=64 closed=1 last_from=127.0.0.1:") ||
		strings.Contains(s, "refused raft connection") {
		t.Fatalf("want one warning (limit=64 closed=1) and no refusal line, log:\n%s", s)
	}

	ok, err := appendEntries(t, b, port.addr)
	if err != nil || !ok {
		t.Fatalf("replica through the full bound: success %v, %v", ok, err)
	}
	if p, c := port.l.Pending(), port.l.Closed(); p != MaxRaftPending-1 || c != n-MaxRaftPending+1 {
		t.Fatalf("after the replica: %d pending, %d closed; want %d and %d", p, c, MaxRaftPending-1, n-MaxRaftPending+1)
	}
}

// TestRaftLayerBoundsInsecure: with --insecure there is nothing to authenticate, but a connection
// that sends nothing still counts until its first read returns, so idle ones are bounded too.
func TestRaftLayerBoundsInsecure(t *testing.T) {
	port := serveBounded(t, &Bundle{insecure: true})
	flood(t, port.addr, "127.0.0.1", MaxRaftPending+6, false)
	waitFor(t, "6 closed", func() bool { return port.l.Closed() == 6 })
	ok, err := appendEntries(t, &Bundle{insecure: true}, port.addr)
	if err != nil || !ok {
		t.Fatalf("plain-text replica: success %v, %v", ok, err)
	}
	if p, c := port.l.Pending(), port.l.Closed(); p != MaxRaftPending-1 || c != 7 {
		t.Fatalf("%d pending, %d closed; want %d and 7", p, c, MaxRaftPending-1)
	}
}

// heldProxy forwards one TCP connection to target: the first chunk from the client (a TLS
// ClientHello) at once, the rest only after release is closed, as a replica on a long path whose
// handshake takes a while. Server-to-client bytes pass freely.
func heldProxy(t *testing.T, target string, release <-chan struct{}) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		go io.Copy(c, s)
		buf := make([]byte, 64<<10)
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		s.Write(buf[:n])
		<-release
		io.Copy(s, c)
	}()
	return ln.Addr().String()
}

// TestRaftLayerFloodSparesOtherSources: a replica's connection in the middle of its TLS handshake
// (held by a slow path) while 100 stalled handshakes from another address (127.0.0.2) fill the
// bound. The flood's own oldest connections are closed (37 of them), the replica's is not, and
// its AppendEntries is answered once its handshake goes on. Before, the bound closed the oldest
// connection that had sent a byte, which was the replica's: a flood outpacing one handshake
// closed a replica's raft connection.
func TestRaftLayerFloodSparesOtherSources(t *testing.T) {
	const n = 100
	b := load(t, newDir(t), nil)
	port := serveBounded(t, b)
	release := make(chan struct{})
	proxy := heldProxy(t, port.addr, release)
	type result struct {
		ok  bool
		err error
	}
	res := make(chan result, 1)
	go func() {
		ok, err := appendEntries(t, b, proxy)
		res <- result{ok, err}
	}()
	waitFor(t, "the replica's ClientHello read", func() bool {
		counts, _ := port.stageCounts("")
		return counts[stageHeard] == 1
	})

	flood(t, port.addr, "127.0.0.2", n, true)
	waitFor(t, "the flood to fill the bound", func() bool {
		counts, _ := port.stageCounts("")
		return port.l.Closed() == n-(MaxRaftPending-1) && counts[stageHeard] == MaxRaftPending
	})
	counts, replica := port.stageCounts("127.0.0.1")
	if p := port.l.Pending(); p != MaxRaftPending || !replica || counts[stageHeard] != MaxRaftPending {
		t.Fatalf("under the flood: %d pending (stages %v), replica's still pending %v; want %d all mid-handshake, true",
			p, counts, replica, MaxRaftPending)
	}
	close(release)
	r := <-res
	if r.err != nil || !r.ok {
		t.Fatalf("replica after the flood: success %v, %v (closed %d)", r.ok, r.err, port.l.Closed())
	}
	if p, c := port.l.Pending(), port.l.Closed(); p != MaxRaftPending-1 || c != n-(MaxRaftPending-1) {
		t.Fatalf("after: %d pending, %d closed; want %d and %d", p, c, MaxRaftPending-1, n-(MaxRaftPending-1))
	}
}

// TestRaftLayerFloodSparesVerifiedPeer: a peer that completed the mutual-TLS handshake with the
// cluster's certificate but has not yet sent its join secret, while 100 stalled handshakes from
// its own address fill the bound. Only the unauthenticated ones compete: the peer's connection
// stays, and its join secret is accepted after the flood. Before, it was the oldest connection
// that had sent a byte, and the first connection past the bound closed it.
func TestRaftLayerFloodSparesVerifiedPeer(t *testing.T) {
	const n = 100
	b := load(t, newDir(t), nil)
	port := serveBounded(t, b)
	raw, err := net.Dial("tcp", port.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cfg := b.clientTLS.Clone() // what RaftLayer.Dial uses
	cfg.NextProtos, cfg.ServerName = []string{raftALPN}, "127.0.0.1"
	peer := tls.Client(raw, cfg)
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	if err := peer.Handshake(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer's certificate verified", func() bool {
		counts, _ := port.stageCounts("")
		return counts[stageVerified] == 1
	})

	flood(t, port.addr, "127.0.0.1", n, true)
	waitFor(t, "the flood to fill the bound", func() bool {
		counts, _ := port.stageCounts("")
		return port.l.Closed() == n-(MaxRaftPending-1) && counts[stageHeard] == MaxRaftPending-1
	})
	if counts, _ := port.stageCounts(""); counts[stageVerified] != 1 || counts[stageHeard] != MaxRaftPending-1 {
		t.Fatalf("under the flood, stages %v; want the verified peer and %d mid-handshake", counts, MaxRaftPending-1)
	}
	if _, err := peer.Write(append([]byte(raftMagic), b.digest[:]...)); err != nil {
		t.Fatal(err)
	}
	var ack [1]byte
	if _, err := io.ReadFull(peer, ack[:]); err != nil || ack[0] != raftAccepted {
		t.Fatalf("join secret after the flood: ack %q, %v", ack[0], err)
	}
	// The ack is written just before the connection leaves the count.
	waitFor(t, "the peer to leave the count", func() bool { return port.l.Pending() == MaxRaftPending-1 })
	if c := port.l.Closed(); c != n-(MaxRaftPending-1) {
		t.Fatalf("after the peer authenticated: %d closed, want %d", c, n-(MaxRaftPending-1))
	}
}

// TestRaftLayerSparesConnectionLeaving: a connection that has just authenticated has left the
// bound (its leave marked it) and waits for the layer's lock to drop off the list; a connection
// accepted then takes its slot and closes nothing. Before, the bound picked it as the victim and
// closed an authenticated raft link.
func TestRaftLayerSparesConnectionLeaving(t *testing.T) {
	b, err := Load(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := b.RaftStreamLayer(ln, nil)
	defer l.Close()
	l.max = 1
	accept := func() (client net.Conn, server *acceptedConn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return c, s.(*acceptedConn)
	}
	client, first := accept()
	// What leave does first, before it takes the lock, when the peer has authenticated.
	if !first.left.CompareAndSwap(false, true) {
		t.Fatal("first connection had left already")
	}
	_, second := accept()
	if got := l.Closed(); got != 0 {
		t.Fatalf("Closed() = %d, want 0", got)
	}
	l.mu.Lock()
	pending := slices.Clone(l.pending)
	l.mu.Unlock()
	if len(pending) != 1 || pending[0] != second {
		t.Fatalf("pending %v, want only the second connection", pending)
	}
	// The first link still carries raft traffic.
	if _, err := first.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v; want \"ok\"", buf, err)
	}
}
