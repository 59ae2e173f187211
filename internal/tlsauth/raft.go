package tlsauth

import (
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// raftALPN is the application protocol both ends of a raft link announce: a gRPC client that
// dials a raft port (or the reverse) fails the handshake instead of exchanging garbage.
const raftALPN = "ddpm-raft/1"

// raftMagic opens the preamble a dialing raft peer sends once TLS is up:
// magic (8 bytes) || sha256(join secret) (32 bytes). The acceptor answers one byte.
const raftMagic = "DDPMRFT1"

const (
	raftAccepted byte = 'A'
	raftRefused  byte = 'R'
	// raftRoleRefused: the join secret is right but the dialer's certificate has a role that may
	// not make raft links (Role.MayRaft). A release older than roles reads it as raftRefused.
	raftRoleRefused byte = 'P'
	// raftAuthTimeout bounds the TLS handshake plus preamble on the accepting side, so a peer that
	// connects and goes silent does not hold a goroutine forever.
	raftAuthTimeout = 10 * time.Second
)

// MaxRaftPending bounds the accepted connections of a RaftLayer that have not authenticated
// (TLS handshake plus join-secret preamble, raftAuthTimeout for both). Raft runs a goroutine per
// accepted connection, so without a bound a peer that opens thousands of TCP connections and
// stalls would hold thousands of goroutines and file descriptors.
const MaxRaftPending = 64

// raftPendingWarnEvery spaces the warnings about connections closed at MaxRaftPending.
const raftPendingWarnEvery = 30 * time.Second

// MsgRaftPendingFull is the warning of a RaftLayer that closed connections because
// MaxRaftPending of them were awaiting authentication, logged on the Bundle's logger at most once
// per 30 s; "closed" counts the connections closed since the previous line, "last_from" names
// the remote of the last one.
const MsgRaftPendingFull = "raft: too many connections awaiting authentication; closing the oldest from the busiest address"

// Stages of an accepted connection on its way to authentication (RaftLayer says which is closed
// first).
const (
	stageSilent   int32 = iota // accepted, no byte read from the peer yet
	stageHeard                 // bytes read, TLS handshake not complete
	stageVerified              // TLS handshake complete: the peer's certificate is signed by the CA
)

// RaftLayer is the raft.StreamLayer that RaftStreamLayer returns. Besides the TLS and join-secret
// checks it bounds the accepted connections awaiting authentication to MaxRaftPending: one more
// closes one of them, chosen in this order:
//
//  1. a connection whose peer has not completed the TLS handshake before one that has (its
//     certificate is the CA's; only its join secret is still to come);
//  2. one from the remote address holding the most pending connections (IPv4 address, IPv6 /64),
//     so a flood from one machine closes its own connections, not a replica's from another;
//  3. one that has sent nothing before one in its TLS handshake;
//  4. the oldest.
//
// The bound is hard (a verified peer that never sends its join secret still counts), but a
// connection leaves the count the moment it authenticates (or fails, or is closed): an
// authenticated connection is never closed by the bound. With Insecure there is nothing to
// authenticate: a connection counts until its first Read or Write returns. Safe for concurrent
// use.
type RaftLayer struct {
	b        *Bundle
	ln       net.Listener
	adv      net.Addr
	srv, cli *tls.Config // nil when insecure
	log      *slog.Logger
	max      int
	closed   atomic.Int64 // connections closed by the bound, ever

	mu        sync.Mutex
	pending   []*acceptedConn // accept order, oldest first
	lastWarn  time.Time
	unwarned  int // closed since the last warning
	warnEvery time.Duration
}

// RaftStreamLayer returns a raft.StreamLayer over ln for raft.NewNetworkTransport: every link is
// mutual TLS 1.3 against the CA plus the join secret, in both directions (each replica is a
// server for some links and a client for others), between certificates of role coordinator or
// without a role (Role.MayRaft: a trainer's or operator's certificate is refused, ErrRole), and
// at most MaxRaftPending accepted connections await authentication (see RaftLayer). advertise is the address other replicas dial
// (nil: ln.Addr()); the dialed host must be named in the peer's certificate unless
// Config.ServerName is set. With Insecure the links are plain TCP. Closing the layer closes ln.
//
// Usage:
//
//	ln, _ := net.Listen("tcp", raftAddr)
//	trans := raft.NewNetworkTransport(b.RaftStreamLayer(ln, adv), 3, 10*time.Second, logOut)
func (b *Bundle) RaftStreamLayer(ln net.Listener, advertise net.Addr) *RaftLayer {
	if ln == nil {
		panic("tlsauth: RaftStreamLayer needs a listener")
	}
	s := &RaftLayer{b: b, ln: ln, adv: advertise, log: b.log, max: MaxRaftPending, warnEvery: raftPendingWarnEvery}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if !b.insecure {
		s.srv = b.serverTLS.Clone()
		s.srv.NextProtos = []string{raftALPN}
		s.cli = b.clientTLS.Clone()
		s.cli.NextProtos = []string{raftALPN}
	}
	return s
}

// Addr is the advertised address (the listener's when none was given).
func (s *RaftLayer) Addr() net.Addr {
	if s.adv != nil {
		return s.adv
	}
	return s.ln.Addr()
}

// Close closes the listener.
func (s *RaftLayer) Close() error { return s.ln.Close() }

// Pending returns the number of accepted connections awaiting authentication.
func (s *RaftLayer) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Closed returns the number of connections closed to keep Pending within MaxRaftPending.
func (s *RaftLayer) Closed() int64 { return s.closed.Load() }

// Accept returns the next connection without blocking on its handshake: the TLS handshake and the
// join-secret preamble run on the connection's first Read or Write (in raft's per-connection
// goroutine), and a peer that fails them gets its connection closed and a log line. The
// connection counts as pending until then; one past the bound closes another (see RaftLayer).
func (s *RaftLayer) Accept() (net.Conn, error) {
	raw, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	c := &acceptedConn{l: s, remote: raw.RemoteAddr().String()}
	c.src = sourceOf(raw.RemoteAddr())
	c.raw = &watchedConn{Conn: raw, c: c}
	if s.srv != nil {
		c.tls = tls.Server(c.raw, s.srv)
		c.Conn = c.tls
	} else {
		c.Conn = c.raw
	}
	s.admit(c)
	return c, nil
}

// admit adds c to the pending list, first closing one connection if the list is full.
func (s *RaftLayer) admit(c *acceptedConn) {
	var victim *acceptedConn
	s.mu.Lock()
	for victim == nil && len(s.pending) >= s.max {
		i := s.victimLocked()
		v := s.pending[i]
		s.pending = slices.Delete(s.pending, i, i+1)
		// One that has just authenticated (or failed, or closed) has left already, its leave
		// waiting for mu: its slot is free, and it is not closed.
		if v.left.CompareAndSwap(false, true) {
			victim = v
			s.unwarned++
		}
	}
	s.pending = append(s.pending, c)
	warn, now := 0, time.Now()
	if victim != nil && now.Sub(s.lastWarn) >= s.warnEvery {
		warn, s.unwarned, s.lastWarn = s.unwarned, 0, now
	}
	s.mu.Unlock()
	if victim == nil {
		return
	}
	s.closed.Add(1)
	victim.evicted.Store(true)
	victim.raw.Conn.Close() // the TCP connection: its handshake or preamble read fails at once
	if warn > 0 {
		s.log.Warn(MsgRaftPendingFull, "limit", s.max, "closed", warn, "last_from", victim.remote,
			"hint", "something opens raft connections and does not authenticate; replicas keep working, but check who reaches the raft port")
	}
}

// victimLocked returns the index in pending of the connection to close (the order is in
// RaftLayer's doc). The caller holds mu.
func (s *RaftLayer) victimLocked() int {
	bySource := make(map[string]int, len(s.pending))
	for _, p := range s.pending {
		bySource[p.src]++
	}
	best, bestStage := 0, s.pending[0].stage.Load()
	for i, p := range s.pending[1:] {
		stage := p.stage.Load()
		if betterVictim(stage, bySource[p.src], bestStage, bySource[s.pending[best].src]) {
			best, bestStage = i+1, stage
		}
	}
	return best
}

// betterVictim reports whether a connection at stage a with aSrc pending from its source is to be
// closed before one at stage b with bSrc; on a tie the older (earlier) one is.
func betterVictim(a int32, aSrc int, b int32, bSrc int) bool {
	if (a == stageVerified) != (b == stageVerified) {
		return b == stageVerified
	}
	if aSrc != bSrc {
		return aSrc > bSrc
	}
	return a < b
}

// leave takes c off the pending list (it authenticated, failed, was closed or was evicted).
func (s *RaftLayer) leave(c *acceptedConn) {
	if !c.left.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	if i := slices.Index(s.pending, c); i >= 0 {
		s.pending = slices.Delete(s.pending, i, i+1)
	}
	s.mu.Unlock()
}

// sourceOf groups remote addresses by who controls them: an IPv4 address, an IPv6 /64 (one host
// commonly holds a whole /64), or the address's string for anything else.
func sourceOf(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ip4 := tcp.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return tcp.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Dial connects to a raft peer, completes the TLS handshake and the join-secret exchange within
// timeout, and returns the link ready for raft's messages.
func (s *RaftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.Dial("tcp", string(address))
	if err != nil || s.cli == nil {
		return raw, err
	}
	cfg := s.cli
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("tlsauth: raft address %q: %w", address, err)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	conn := tls.Client(raw, cfg)
	if timeout > 0 {
		conn.SetDeadline(time.Now().Add(timeout))
	}
	fail := func(err error) (net.Conn, error) {
		conn.Close()
		s.b.refusals.warn("tlsauth: raft dial refused", string(address), refusalReason(err, string(address)), "err", err.Error())
		return nil, err
	}
	if err := conn.Handshake(); err != nil {
		return fail(fmt.Errorf("tlsauth: raft peer %s: %w", address, err))
	}
	// The peer must be a coordinator too: the preamble is not sent to a trainer's or an
	// operator's certificate.
	if err := raftPeerRole(conn, string(address)); err != nil {
		return fail(err)
	}
	pre := make([]byte, 0, len(raftMagic)+len(s.b.digest))
	pre = append(append(pre, raftMagic...), s.b.digest[:]...)
	if _, err := conn.Write(pre); err != nil {
		return fail(fmt.Errorf("tlsauth: raft peer %s: %w", address, err))
	}
	// In TLS 1.3 the server judges our certificate after our side of the handshake is done, so a
	// refusal of the certificate shows up here, as an alert on the first read.
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return fail(fmt.Errorf("tlsauth: raft peer %s refused the connection: %w", address, err))
	}
	if ack[0] == raftRoleRefused {
		return fail(fmt.Errorf("%w: raft peer %s refused our certificate of role %s: raft links take coordinator certificates (ddpm certs issue --role coordinator)", ErrRole, address, s.b.role))
	}
	if ack[0] != raftAccepted {
		return fail(fmt.Errorf("%w: raft peer %s refused our join secret", ErrJoinSecret, address))
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// raftPeerRole returns nil when the certificate the peer at remote presented on conn (handshake
// complete) may make raft links (Role.MayRaft), and an error wrapping ErrRole naming its role
// otherwise.
func raftPeerRole(conn *tls.Conn, remote string) error {
	certs := conn.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("%w: raft peer %s presented no certificate", ErrRole, remote)
	}
	r, err := RoleOf(certs[0])
	if err != nil {
		return fmt.Errorf("%w: raft peer %s: %v", ErrRole, remote, strings.TrimPrefix(err.Error(), ErrRole.Error()+": "))
	}
	if !r.MayRaft() {
		return fmt.Errorf("%w: raft peer %s presented a certificate of role %s: raft links take coordinator certificates", ErrRole, remote, r)
	}
	return nil
}

// acceptedConn is the accepting end of a raft link; it authenticates the peer once, before the
// first byte of raft traffic passes in either direction.
type acceptedConn struct {
	net.Conn              // tls when secure, raw when insecure
	tls      *tls.Conn    // nil when insecure
	raw      *watchedConn // the TCP connection
	l        *RaftLayer
	remote   string
	src      string       // sourceOf(remote)
	stage    atomic.Int32 // stageSilent, stageHeard, stageVerified
	left     atomic.Bool  // off the layer's pending list
	evicted  atomic.Bool  // closed by the bound
	once     sync.Once
	err      error
}

// auth runs the TLS handshake and the join-secret check once (nothing when insecure) and takes c
// off the pending count when they end.
func (c *acceptedConn) auth() error {
	if c.tls == nil {
		return nil
	}
	c.once.Do(func() {
		defer c.l.leave(c)
		c.raw.SetDeadline(time.Now().Add(raftAuthTimeout))
		defer c.raw.SetDeadline(time.Time{})
		if err := c.tls.Handshake(); err != nil {
			c.err = fmt.Errorf("tlsauth: raft peer %s: %w", c.remote, err)
		} else {
			c.stage.Store(stageVerified)
			var pre [len(raftMagic) + 32]byte
			if _, err := io.ReadFull(c.tls, pre[:]); err != nil {
				c.err = fmt.Errorf("tlsauth: raft peer %s sent no join-secret preamble: %w", c.remote, err)
			} else if string(pre[:len(raftMagic)]) != raftMagic ||
				subtle.ConstantTimeCompare(pre[len(raftMagic):], c.l.b.digest[:]) != 1 {
				c.tls.Write([]byte{raftRefused})
				c.err = fmt.Errorf("%w: raft peer %s presented a wrong join secret", ErrJoinSecret, c.remote)
			} else if err := raftPeerRole(c.tls, c.remote); err != nil {
				c.tls.Write([]byte{raftRoleRefused})
				c.err = err
			} else if _, err := c.tls.Write([]byte{raftAccepted}); err != nil {
				c.err = fmt.Errorf("tlsauth: raft peer %s: %w", c.remote, err)
			}
		}
		if c.err != nil {
			// Neither a connection the bound closed (its warning accounts for it) nor a peer
			// that hung up before its first byte (a replica stopping) is a refusal.
			if !c.evicted.Load() && !hungUpSilent(c.err, c.stage.Load() != stageSilent) {
				c.l.b.refusals.warn("tlsauth: refused raft connection", c.remote, refusalReason(c.err, c.remote), "err", c.err.Error())
			}
			c.raw.Conn.Close()
		}
	})
	return c.err
}

// Read authenticates the peer on the first call (TLS) and then reads raft traffic. Insecure, the
// connection leaves the pending count when the first Read returns.
func (c *acceptedConn) Read(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if c.tls == nil {
		c.l.leave(c)
	}
	return n, err
}

// Write authenticates the peer on the first call (TLS) and then writes raft traffic.
func (c *acceptedConn) Write(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Write(p)
	if c.tls == nil {
		c.l.leave(c)
	}
	return n, err
}

// Close closes the link and takes it off the pending count.
func (c *acceptedConn) Close() error {
	c.l.leave(c)
	return c.Conn.Close()
}

// watchedConn is an accepted TCP connection that moves its acceptedConn from stageSilent to
// stageHeard with the first byte it reads.
type watchedConn struct {
	net.Conn
	c *acceptedConn
}

func (w *watchedConn) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	if n > 0 {
		w.c.stage.CompareAndSwap(stageSilent, stageHeard)
	}
	return n, err
}
