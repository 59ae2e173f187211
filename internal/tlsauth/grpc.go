package tlsauth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Messages of the codes.Unauthenticated errors a server returns; a client sees them verbatim in
// the status description.
const (
	msgNoSecret    = "ddpm: no join secret presented: this cluster requires the join-secret file of its --certs directory"
	msgWrongSecret = "ddpm: wrong join secret: the caller belongs to another cluster (compare the join-secret files of both --certs directories)"
)

// ServerOptions returns the options a gRPC server of the cluster needs: mutual TLS 1.3 against
// the CA, the join-secret check on every unary and streaming call, and then the role check (a
// caller whose certificate's role may not call the method gets codes.PermissionDenied; see
// Role). With Insecure they select plain text and no checks. Append the component's own options
// (message sizes, windows) after.
func (b *Bundle) ServerOptions() []grpc.ServerOption {
	if b.insecure {
		return []grpc.ServerOption{grpc.Creds(insecure.NewCredentials())}
	}
	return []grpc.ServerOption{
		grpc.Creds(refusalLogger{credentials.NewTLS(b.serverTLS.Clone()), b}),
		grpc.ChainUnaryInterceptor(b.unaryCheck),
		grpc.ChainStreamInterceptor(b.streamCheck),
	}
}

// DialOptions returns the options a gRPC client of the cluster needs: TLS 1.3 verifying the
// server against the CA (and Config.ServerName when set), our certificate offered, and the join
// secret sent with every call, to a server whose certificate's role serves the method (or has
// no role; ServerRole): a call to another is not sent and fails with codes.PermissionDenied. With Insecure they select plain text. A later
// grpc.WithTransportCredentials in the same option list would replace ours: append these last.
func (b *Bundle) DialOptions() []grpc.DialOption {
	if b.insecure {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return []grpc.DialOption{
		grpc.WithTransportCredentials(verdictWaiter{credentials.NewTLS(b.clientTLS.Clone())}),
		grpc.WithPerRPCCredentials(secretCreds{b.secret}),
	}
}

// checkSecret returns nil when the call's metadata carries exactly our join secret, and a
// codes.Unauthenticated status otherwise. The comparison is of SHA-256 digests in constant time,
// so neither the content nor the length of the secret leaks through timing.
func (b *Bundle) checkSecret(ctx context.Context, method string) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(MetadataKey)
	msg := ""
	switch {
	case len(vals) == 0:
		msg = msgNoSecret
	default:
		got := sha256.Sum256([]byte(vals[0]))
		if subtle.ConstantTimeCompare(got[:], b.digest[:]) != 1 || len(vals) != 1 {
			msg = msgWrongSecret
		}
	}
	if msg == "" {
		return nil
	}
	remote := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	b.refusals.warn("tlsauth: refused call", remote, msg, "method", method, "reason", msg)
	return status.Error(codes.Unauthenticated, msg)
}

// checkRole returns nil when the caller's certificate has a role that may call method (see
// Role; a certificate without a role may call everything), and a codes.PermissionDenied status
// naming the role and the method otherwise (msgRoleRefused), with one Warn line on the server's
// log (rate-limited like every refusal).
func (b *Bundle) checkRole(ctx context.Context, method string) error {
	remote, ti := "unknown", credentials.TLSInfo{}
	if p, ok := peer.FromContext(ctx); ok {
		if p.Addr != nil {
			remote = p.Addr.String()
		}
		ti, _ = p.AuthInfo.(credentials.TLSInfo)
	}
	var msg string
	var role Role
	if len(ti.State.PeerCertificates) == 0 {
		msg = "ddpm: the caller presented no certificate" // ServerOptions' TLS requires one: not reached
	} else if r, err := RoleOf(ti.State.PeerCertificates[0]); err != nil {
		msg = "ddpm: refused: " + strings.TrimPrefix(err.Error(), ErrRole.Error()+": ")
	} else if r.MayCall(method) {
		return nil
	} else {
		role, msg = r, msgRoleRefused(r, method)
	}
	b.refusals.warn("tlsauth: refused call", remote, msg, "method", method, "cert_role", string(role), "reason", msg)
	return status.Error(codes.PermissionDenied, msg)
}

func (b *Bundle) unaryCheck(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := b.checkSecret(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	if err := b.checkRole(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (b *Bundle) streamCheck(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := b.checkSecret(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	if err := b.checkRole(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// secretCreds attaches the join secret to every call. It insists on transport security so the
// secret never travels in plain text, and sends it only to a server whose certificate's role
// serves the method (checkServerRole).
type secretCreds struct{ secret string }

func (c secretCreds) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if ri, ok := credentials.RequestInfoFromContext(ctx); ok {
		if err := checkServerRole(ri); err != nil {
			return nil, err
		}
	}
	return map[string]string{MetadataKey: c.secret}, nil
}

// checkServerRole returns nil when the server of the call ri describes presented a certificate
// without a role or of the role that serves ri.Method (ServerRole; methods of no ddpm service
// are not checked), and a codes.PermissionDenied status otherwise (msgServerRefused): the call is
// not sent, the join secret with it. So a trainer's or operator's certificate cannot pass for a
// coordinator, nor a coordinator's or operator's for a trainer, to this process.
func checkServerRole(ri credentials.RequestInfo) error {
	want, ok := ServerRole(ri.Method)
	if !ok {
		return nil
	}
	ti, _ := ri.AuthInfo.(credentials.TLSInfo)
	if len(ti.State.PeerCertificates) == 0 {
		return nil // TLS verified the server against the CA; a server without a certificate is not reached
	}
	r, err := RoleOf(ti.State.PeerCertificates[0])
	if err != nil {
		return status.Error(codes.PermissionDenied, serverRefusedPrefix+strings.TrimPrefix(err.Error(), ErrRole.Error()+": "))
	}
	if r == RoleNone || r == want {
		return nil
	}
	return status.Error(codes.PermissionDenied, msgServerRefused(r, want, ri.Method))
}

func (secretCreds) RequireTransportSecurity() bool { return true }

// refusalLogger logs failed server-side TLS handshakes (no certificate, a certificate from
// another CA, TLS below 1.3) with the peer's address, rate-limited per host and reason; gRPC
// itself only drops the connection.
type refusalLogger struct {
	credentials.TransportCredentials
	b *Bundle
}

func (r refusalLogger) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	h := &heardConn{Conn: raw}
	conn, info, err := r.TransportCredentials.ServerHandshake(h)
	if err != nil && !hungUpSilent(err, h.heard.Load()) {
		remote := raw.RemoteAddr().String()
		r.b.refusals.warn("tlsauth: refused connection", remote, refusalReason(err, remote), "err", err.Error())
	}
	return conn, info, err
}

// hungUpSilent reports whether a failed server-side handshake is a peer that closed its
// connection before sending any byte of it (heard: a byte was read): a client going away as its
// process stops, or a TCP probe; no refusal.
func hungUpSilent(err error, heard bool) bool { return !heard && errors.Is(err, io.EOF) }

// heardConn is an accepted connection that notes the first byte read from it.
type heardConn struct {
	net.Conn
	heard atomic.Bool
}

func (h *heardConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 && !h.heard.Load() {
		h.heard.Store(true)
	}
	return n, err
}

// SyscallConn passes the TCP connection's through, for gRPC's socket options and channelz.
func (h *heardConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := h.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

func (r refusalLogger) Clone() credentials.TransportCredentials {
	return refusalLogger{r.TransportCredentials.Clone(), r.b}
}

// verdictWaiter makes a refused client see why. In TLS 1.3 the client's handshake completes
// before the server has judged the client's certificate; the server's verdict (an alert such as
// "certificate required" or "unknown certificate authority") then races with the client's first
// write, which usually loses with a bare "broken pipe". A gRPC server speaks first after the
// handshake (its HTTP/2 SETTINGS frame), so the client waits for that first byte, or the alert,
// before handing the connection to gRPC.
type verdictWaiter struct {
	credentials.TransportCredentials
}

// verdictTimeout bounds the wait when the dial context has no deadline.
const verdictTimeout = 20 * time.Second

func (v verdictWaiter) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := v.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(verdictTimeout)
	}
	conn.SetReadDeadline(deadline)
	br := bufio.NewReader(conn)
	_, err = br.Peek(1)
	conn.SetReadDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("tlsauth: %s refused this node: %w", authority, err)
	}
	return &peekedConn{Conn: conn, r: br}, info, nil
}

func (v verdictWaiter) Clone() credentials.TransportCredentials {
	return verdictWaiter{v.TransportCredentials.Clone()}
}

// peekedConn returns the bytes verdictWaiter buffered before reading on.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
