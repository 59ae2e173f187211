package tlsauth

import (
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
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
	// raftAuthTimeout bounds the TLS handshake plus preamble on the accepting side, so a peer that
	// connects and goes silent does not hold a goroutine forever.
	raftAuthTimeout = 10 * time.Second
)

// RaftStreamLayer returns a raft.StreamLayer over ln for raft.NewNetworkTransport: every link is
// mutual TLS 1.3 against the CA plus the join secret, in both directions (each replica is a
// server for some links and a client for others). advertise is the address other replicas dial
// (nil: ln.Addr()); the dialed host must be named in the peer's certificate unless
// Config.ServerName is set. With Insecure the links are plain TCP. Closing the layer closes ln.
//
// Usage:
//
//	ln, _ := net.Listen("tcp", raftAddr)
//	trans := raft.NewNetworkTransport(b.RaftStreamLayer(ln, adv), 3, 10*time.Second, logOut)
func (b *Bundle) RaftStreamLayer(ln net.Listener, advertise net.Addr) raft.StreamLayer {
	if ln == nil {
		panic("tlsauth: RaftStreamLayer needs a listener")
	}
	s := &streamLayer{b: b, ln: ln, adv: advertise}
	if !b.insecure {
		s.srv = b.serverTLS.Clone()
		s.srv.NextProtos = []string{raftALPN}
		s.cli = b.clientTLS.Clone()
		s.cli.NextProtos = []string{raftALPN}
	}
	return s
}

type streamLayer struct {
	b        *Bundle
	ln       net.Listener
	adv      net.Addr
	srv, cli *tls.Config // nil when insecure
}

func (s *streamLayer) Addr() net.Addr {
	if s.adv != nil {
		return s.adv
	}
	return s.ln.Addr()
}

func (s *streamLayer) Close() error { return s.ln.Close() }

// Accept returns the next connection without blocking on its handshake: the TLS handshake and the
// join-secret preamble run on the connection's first Read or Write (in raft's per-connection
// goroutine), and a peer that fails them gets its connection closed and a log line.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil || s.srv == nil {
		return c, err
	}
	return &acceptedConn{Conn: tls.Server(c, s.srv), b: s.b}, nil
}

// Dial connects to a raft peer, completes the TLS handshake and the join-secret exchange within
// timeout, and returns the link ready for raft's messages.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
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
	if ack[0] != raftAccepted {
		return fail(fmt.Errorf("%w: raft peer %s refused our join secret", ErrJoinSecret, address))
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// acceptedConn is the accepting end of a raft link; it authenticates the peer once, before the
// first byte of raft traffic passes in either direction.
type acceptedConn struct {
	*tls.Conn
	b    *Bundle
	once sync.Once
	err  error
}

func (c *acceptedConn) auth() error {
	c.once.Do(func() {
		remote := c.Conn.RemoteAddr().String()
		c.Conn.SetDeadline(time.Now().Add(raftAuthTimeout))
		defer c.Conn.SetDeadline(time.Time{})
		if err := c.Conn.Handshake(); err != nil {
			c.err = fmt.Errorf("tlsauth: raft peer %s: %w", remote, err)
		} else {
			var pre [len(raftMagic) + 32]byte
			if _, err := io.ReadFull(c.Conn, pre[:]); err != nil {
				c.err = fmt.Errorf("tlsauth: raft peer %s sent no join-secret preamble: %w", remote, err)
			} else if string(pre[:len(raftMagic)]) != raftMagic ||
				subtle.ConstantTimeCompare(pre[len(raftMagic):], c.b.digest[:]) != 1 {
				c.Conn.Write([]byte{raftRefused})
				c.err = fmt.Errorf("%w: raft peer %s presented a wrong join secret", ErrJoinSecret, remote)
			} else if _, err := c.Conn.Write([]byte{raftAccepted}); err != nil {
				c.err = fmt.Errorf("tlsauth: raft peer %s: %w", remote, err)
			}
		}
		if c.err != nil {
			c.b.refusals.warn("tlsauth: refused raft connection", remote, refusalReason(c.err, remote), "err", c.err.Error())
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *acceptedConn) Read(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *acceptedConn) Write(p []byte) (int, error) {
	if err := c.auth(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
