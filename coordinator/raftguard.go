package coordinator

import (
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// MaxRaftPending bounds the raft connections a replica holds that have not yet authenticated
// (mutual TLS plus the join secret, which tlsauth gives each one 10 s for). Raft runs a
// goroutine per accepted connection, so without a bound a peer that opens thousands of TCP
// connections and sends nothing held thousands of goroutines and file descriptors.
const MaxRaftPending = 64

// raftPendingWarnEvery spaces the warnings about connections closed at MaxRaftPending.
const raftPendingWarnEvery = 30 * time.Second

// MsgRaftPendingFull is the warning of a replica that closed raft connections because
// MaxRaftPending of them were awaiting authentication (at most one line per 30 s; "closed"
// counts the connections closed since the previous line).
const MsgRaftPendingFull = "raft: too many connections awaiting authentication; closing the oldest"

// raftGuard wraps the raft listener and keeps at most max accepted connections that have not
// authenticated. A connection past the bound makes room by closing the oldest one that has sent
// no byte yet, or else the oldest one: a replica's own connection sends its TLS ClientHello at
// once and authenticates within a round trip or two, so a flood of idle connections never
// closes it, and a flood of slow handshakes must outpace its handshake to do so.
type raftGuard struct {
	net.Listener
	max    int
	log    *slog.Logger
	closed atomic.Int64 // connections closed to make room, ever

	mu        sync.Mutex
	pending   []*guardedConn // accept order, oldest first
	lastWarn  time.Time
	unwarned  int // closed since the last warning
	warnEvery time.Duration
}

func newRaftGuard(ln net.Listener, max int, log *slog.Logger) *raftGuard {
	if max < 1 {
		panic("coordinator: raft guard needs a bound of at least 1")
	}
	return &raftGuard{Listener: ln, max: max, log: log, warnEvery: raftPendingWarnEvery}
}

// Pending returns the number of accepted connections that have not authenticated.
func (g *raftGuard) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// Closed returns the number of connections closed to keep Pending within the bound.
func (g *raftGuard) Closed() int64 { return g.closed.Load() }

// Accept returns the next raw connection, counted as pending until its owner sees the first
// byte of raft traffic (see guardLayer) or closes it.
func (g *raftGuard) Accept() (net.Conn, error) {
	raw, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	c := &guardedConn{Conn: raw, g: g}
	var victim *guardedConn
	g.mu.Lock()
	if len(g.pending) >= g.max {
		i := slices.IndexFunc(g.pending, func(p *guardedConn) bool { return !p.heard.Load() })
		if i < 0 {
			i = 0
		}
		victim = g.pending[i]
		g.pending = slices.Delete(g.pending, i, i+1)
		g.unwarned++
	}
	g.pending = append(g.pending, c)
	warn, now := 0, time.Now()
	if victim != nil && now.Sub(g.lastWarn) >= g.warnEvery {
		warn, g.unwarned, g.lastWarn = g.unwarned, 0, now
	}
	g.mu.Unlock()
	if victim != nil {
		g.closed.Add(1)
		victim.Conn.Close()
	}
	if warn > 0 {
		g.log.Warn(MsgRaftPendingFull, "limit", g.max, "closed", warn, "last_from", victim.RemoteAddr().String(),
			"hint", "something opens raft connections and does not authenticate; replicas keep working, but check who reaches the raft port")
	}
	return c, nil
}

// done takes c off the pending list (it authenticated, failed or closed).
func (g *raftGuard) done(c *guardedConn) {
	if !c.left.CompareAndSwap(false, true) {
		return
	}
	g.mu.Lock()
	if i := slices.Index(g.pending, c); i >= 0 {
		g.pending = slices.Delete(g.pending, i, i+1)
	}
	g.mu.Unlock()
}

// guardedConn is a raw accepted connection; heard is set by its first byte.
type guardedConn struct {
	net.Conn
	g     *raftGuard
	heard atomic.Bool
	left  atomic.Bool
}

func (c *guardedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.heard.Store(true)
	}
	return n, err
}

func (c *guardedConn) Close() error {
	c.g.done(c)
	return c.Conn.Close()
}

// guardLayer is the raft stream layer over a raftGuard's listener: a connection leaves the
// guard's pending list once its first Read or Write returns, which for tlsauth's layer is after
// the TLS handshake and the join-secret check (they run on the first Read or Write).
type guardLayer struct {
	raft.StreamLayer
	g *raftGuard
}

func (l guardLayer) Accept() (net.Conn, error) {
	c, err := l.StreamLayer.Accept()
	if err != nil {
		return nil, err
	}
	raw := c
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	gc, ok := raw.(*guardedConn)
	if !ok {
		panic("coordinator: the raft stream layer did not wrap the guard's connection")
	}
	return &authWatch{Conn: c, gc: gc}, nil
}

// authWatch reports its connection authenticated (done) when its first Read or Write returns.
type authWatch struct {
	net.Conn
	gc *guardedConn
}

func (c *authWatch) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.gc.g.done(c.gc)
	return n, err
}

func (c *authWatch) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.gc.g.done(c.gc)
	return n, err
}
