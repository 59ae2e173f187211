package coordinator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
)

// Client talks to a coordinator cluster. Every method retries across the replicas (any replica
// forwards writes to the leader) until it gets an answer or ctx ends, reusing one request id so
// that a retried write applies exactly once. Refusals come back as the state machine's errors
// (fsm.ErrStaleGeneration, fsm.ErrUnknownMember, fsm.ErrConfigMismatch, ...; a stale
// incarnation as a *StaleIncarnationError) or ErrVersionMismatch, testable with errors.Is; running out of time gives ErrUnavailable.
// The replicas rotated over are those given to Dial plus those the replicas name in their
// answers (Join, Heartbeat, Status carry every replica's gRPC address from --peers), so a client
// given one replica's address still reaches the others while that one is down. A learned
// address that a later answer no longer names (the replica was moved or removed from --peers)
// is dropped again; those given to Dial are kept.
// A Client is safe for concurrent use.
type Client struct {
	sec     *tlsauth.Bundle
	attempt time.Duration
	backoff time.Duration

	log *slog.Logger // WithLog: warnings while no replica answers

	mu        sync.Mutex
	addrs     []string           // the given ones (never dropped), then the learned ones
	given     int                // how many of addrs were given to Dial
	conns     []*grpc.ClientConn // conns[i] is to addrs[i]
	closed    bool
	cur       int       // index of the replica that answered last
	failSince time.Time // start of the current run of failed attempts (zero: the last one answered)
	warned    time.Time // when that run was last logged
	// certSince is the start of the current run of failed attempts that were all certificate
	// refusals (CertRefusal), attempts that reached no one (connection refused, timed out)
	// aside; zero once a replica answered or failed otherwise. certErr is the latest refusal.
	certSince time.Time
	certErr   error
	// certFinal (WithCertRefusalFinal): a certificate refusal ends the call at once.
	certFinal bool
	// probed holds, per address, what notGRPC found answering there ("": nothing to say), so
	// each address is probed once.
	probed map[string]string
}

// Unanswered calls are logged (WithLog) once they have failed for warnAfter, then every
// warnEvery: a leader election at start-up or a failover passes in a few seconds without a line,
// a cluster that stays away (down, or refusing our certificate) does not. A join logs that it
// waits for a run config once the coordinators have answered "no run config" for noRunWarnAfter
// (replicas started with the config answer so until their leader has committed it), then every
// warnEvery.
var (
	warnAfter      = 5 * time.Second
	warnEvery      = 30 * time.Second
	noRunWarnAfter = 5 * time.Second
)

// Option configures Dial.
type Option func(*Client)

// WithAttemptTimeout bounds each single attempt against one replica (default 2s).
func WithAttemptTimeout(d time.Duration) Option { return func(c *Client) { c.attempt = d } }

// WithCertRefusalFinal makes a call end at the first certificate refusal (CertRefusal: either
// side's certificate is not from the other's CA) with a *CertRefusedError naming the replica,
// rather than retrying until ctx ends: for a command run by hand with --certs of another
// cluster, which retrying cannot mend. (A trainer keeps retrying, see CertRefusedFor.)
func WithCertRefusalFinal() Option { return func(c *Client) { c.certFinal = true } }

// CertRefusedError is a call's failure at a TLS handshake with the replica at Addr that refused,
// or was refused by, this process's certificate (WithCertRefusalFinal). Err is gRPC's error.
type CertRefusedError struct {
	Addr string
	Err  error
}

func (e *CertRefusedError) Error() string {
	return fmt.Sprintf("coordinator %s: %s (%v)", e.Addr, Hint(e.Err), e.Err)
}

func (e *CertRefusedError) Unwrap() error { return e.Err }

// WithBackoff sets the pause after a round of failed attempts (default 100ms).
func WithBackoff(d time.Duration) Option { return func(c *Client) { c.backoff = d } }

// WithLog makes the client warn on log while its calls get no answer from any replica for more
// than a few seconds (then every 30 s), naming the last error and, for TLS failures, their
// likely cause (see Hint).
func WithLog(log *slog.Logger) Option { return func(c *Client) { c.log = log } }

// Hint names the likely cause of a failed call's error in words an operator can act on, or ""
// when it has none to add: the usual ways two processes of different security set-ups fail to
// talk (another run's CA, one side in plain text).
func Hint(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	switch {
	case theirCertRefused(msg):
		return "the coordinator's certificate is not from this process's CA (--certs of another run?)"
	case ourCertRefused(msg):
		return "the coordinator refused this process's certificate (--certs of another run?)"
	case strings.Contains(msg, "error reading server preface"):
		return "the coordinator closed the connection at once: it may require mutual TLS while this process runs --insecure"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the address answers in plain text: a coordinator run with --insecure while this process uses --certs, " +
			"or not a coordinator's --grpc-addr (its --http-addr?)"
	case strings.Contains(msg, "no application protocol"):
		return "the address speaks TLS but not gRPC: a coordinator's --raft-addr? --coordinator takes its --grpc-addr"
	case strings.Contains(msg, "cannot reach the leader"):
		return "that replica answers but cannot forward to the leader: check the leader's gRPC address in that replica's --peers"
	case strings.Contains(msg, "connection refused"):
		return "nothing listens at that address (coordinator down or not started yet?)"
	}
	return ""
}

// noteFailure records a failed attempt against the replica at addr and logs it as WithLog says;
// c.mu is not held.
func (c *Client) noteFailure(addr string, err error) {
	now := time.Now()
	c.mu.Lock()
	switch {
	case CertRefusal(err):
		if c.certSince.IsZero() {
			c.certSince = now
		}
		c.certErr = err
	case !unreached(err):
		c.certSince, c.certErr = time.Time{}, nil
	}
	if c.log == nil {
		c.mu.Unlock()
		return
	}
	if c.failSince.IsZero() {
		c.failSince = now
	}
	due := now.Sub(c.failSince) >= warnAfter && now.Sub(c.warned) >= warnEvery
	if due {
		c.warned = now
	}
	since := now.Sub(c.failSince)
	c.mu.Unlock()
	if due {
		args := []any{"addr", addr, "for", since.Round(time.Second).String(), "err", err.Error()}
		if h := Hint(err); h != "" {
			args = append(args, "hint", h)
		}
		c.log.Warn("coordinator not answering; retrying", args...)
	}
}

// Dial prepares connections to the replicas at addrs (gRPC host:port), secured by sec (mutual
// TLS and the join secret, or plain text when sec is Insecure; nil panics). It does not wait for
// them: a replica that is down is skipped on each call. A replica that refuses our certificate
// looks down (the call retries until ctx ends and the ErrUnavailable names the TLS alert); one
// that refuses our join secret returns ErrUnauthenticated at once.
func Dial(addrs []string, sec *tlsauth.Bundle, opts ...Option) (*Client, error) {
	if sec == nil {
		panic("coordinator: Dial without a tlsauth.Bundle (plain text only with Config.Insecure)")
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%w: no coordinator addresses", ErrUnavailable)
	}
	c := &Client{sec: sec, attempt: 2 * time.Second, backoff: 100 * time.Millisecond}
	for _, o := range opts {
		o(c)
	}
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, append(callOptions(), sec.DialOptions()...)...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("coordinator: dial %s: %w", a, err)
		}
		c.addrs, c.conns = append(c.addrs, a), append(c.conns, cc)
	}
	c.given = len(c.addrs)
	return c, nil
}

// Addrs returns the replica addresses the client rotates over: those given to Dial, then those
// learned from the replicas' answers (and still named by the latest), in the order added.
func (c *Client) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.addrs)
}

// learn makes the rotation follow the replica addresses an answer named (the replica's
// --peers): those the client lacks are added, and those it learned from earlier answers that
// this one no longer names are dropped (their connections closed); the addresses given to Dial
// stay. An empty list (a replica older than the field) changes nothing. An address gRPC cannot
// parse is left out: the call that named it has succeeded. So is a wildcard (0.0.0.0:PORT,
// :PORT): a listen address, which names the client's own host.
func (c *Client) learn(addrs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(addrs) == 0 {
		return
	}
	cur := c.addrs[c.cur]
	var drop []*grpc.ClientConn
	for i := len(c.addrs) - 1; i >= c.given; i-- {
		if !slices.Contains(addrs, c.addrs[i]) {
			drop = append(drop, c.conns[i])
			c.addrs, c.conns = slices.Delete(c.addrs, i, i+1), slices.Delete(c.conns, i, i+1)
		}
	}
	for _, a := range addrs {
		if a == "" || slices.Contains(c.addrs, a) || wildcard(a) {
			continue
		}
		cc, err := grpc.NewClient(a, append(callOptions(), c.sec.DialOptions()...)...)
		if err != nil {
			continue
		}
		c.addrs, c.conns = append(c.addrs, a), append(c.conns, cc)
	}
	c.cur = max(0, slices.Index(c.addrs, cur))
	for _, cc := range drop {
		cc.Close() // calls in flight on it end as Canceled and go on to the next replica
	}
}

// answered records that the replica at addr answered: later calls start there (when it is
// still in the rotation).
func (c *Client) answered(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i := slices.Index(c.addrs, addr); i >= 0 {
		c.cur = i
	}
	c.failSince, c.warned = time.Time{}, time.Time{}
	c.certSince, c.certErr = time.Time{}, nil
}

// CertRefusal reports whether err is a TLS certificate refusal between this process and a
// coordinator: either side's certificate is not from the other's CA (the first two causes Hint
// names: --certs of another cluster).
func CertRefusal(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return theirCertRefused(msg) || ourCertRefused(msg)
}

// theirCertRefused: this process refused the coordinator's certificate (another CA).
func theirCertRefused(msg string) bool {
	return strings.Contains(msg, "certificate signed by unknown authority")
}

// ourCertRefused: the coordinator refused this process's certificate (a TLS alert).
func ourCertRefused(msg string) bool {
	return strings.Contains(msg, "bad certificate") || strings.Contains(msg, "unknown certificate authority") ||
		strings.Contains(msg, "certificate required")
}

// unreached reports whether a failed attempt reached no replica at all (nothing listening, no
// answer in time): it says nothing about the replicas that do answer.
func unreached(err error) bool {
	return status.Code(err) == codes.DeadlineExceeded || strings.Contains(err.Error(), "connection refused")
}

// CertRefusedFor reports for how long every failed attempt of this client has been a
// certificate refusal (CertRefusal; attempts that reached no replica aside) with no replica
// answering, and the latest refusal; 0 and nil when the latest answer or failure was another.
// A process of another cluster (another CA) hears nothing else, however long it retries.
func (c *Client) CertRefusedFor() (time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.certSince.IsZero() {
		return 0, nil
	}
	return time.Since(c.certSince), c.certErr
}

// wildcard reports whether host:port addr has no host or an unspecified IP (0.0.0.0, ::).
func wildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || ip != nil && ip.IsUnspecified()
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// NewRequestID returns a random request id for exactly-once writes.
func NewRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("coordinator: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// retryable reports whether an error means "try another replica or try later".
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown, codes.Internal, codes.ResourceExhausted:
		return true
	}
	return false
}

// call runs fn against replicas in turn, starting with the last one that answered. An address
// that is no coordinator (it serves no coordinator service, or its certificate has another role
// than coordinator) is passed over like an unreachable one, so one stale or hijacked entry does
// not hide the real replicas; when every address of a round is such, the call fails at once with
// ErrNotCoordinator naming the first.
func (c *Client) call(ctx context.Context, fn func(ctx context.Context, cl api.CoordinatorClient) error) error {
	var last error
	for round := 0; ; round++ {
		// A snapshot: replicas learned meanwhile join the next round.
		c.mu.Lock()
		start, conns, addrs := c.cur, c.conns, c.addrs
		c.mu.Unlock()
		var notCoord error // the first address of this round that is no coordinator
		wrong := 0
		for i := range conns {
			idx := (start + i) % len(conns)
			actx, cancel := context.WithTimeout(ctx, c.attempt)
			err := fn(actx, api.NewCoordinatorClient(conns[idx]))
			cancel()
			var nc error
			if what := c.httpsPort(ctx, addrs[idx], err); what != "" {
				nc = &NotCoordinatorError{Addr: addrs[idx], Msg: what}
			} else if status.Code(err) == codes.Unimplemented {
				nc = &NotCoordinatorError{Addr: addrs[idx], Msg: addrs[idx] + " answers but serves no coordinator (a trainer's --listen address? " +
					"use the coordinators' --grpc-addr)"}
			} else if why := tlsauth.ServerRefusal(err); why != "" { // nothing was sent to it
				// A trainer's certificate (its --listen or --http-addr) or an operator's: say where to go.
				nc = &NotCoordinatorError{Addr: addrs[idx], Msg: "refused the server at " + addrs[idx] + ": " + why + ": " + GRPCPortHint}
			} else if what := c.notGRPC(ctx, addrs[idx], err); what != "" {
				nc = &NotCoordinatorError{Addr: addrs[idx], Msg: what}
			}
			if nc != nil {
				wrong++
				if notCoord == nil {
					notCoord = nc
				}
				last = nc
				continue
			}
			if err == nil || !retryable(err) {
				c.answered(addrs[idx])
				return decodeErr(err)
			}
			last = err
			c.noteFailure(addrs[idx], err)
			if c.certFinal && CertRefusal(err) {
				return &CertRefusedError{Addr: addrs[idx], Err: err}
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %v (last error: %v)", ErrUnavailable, ctx.Err(), last)
			}
		}
		if wrong > 0 && wrong == len(conns) {
			return notCoord
		}
		t := time.NewTimer(c.backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %v (last error: %v)", ErrUnavailable, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// NotCoordinatorError is the failure of a call whose every address answers but is no
// coordinator's gRPC port this client can use (errors.Is(err, ErrNotCoordinator) holds): a gRPC
// server without the coordinator service (a trainer's --listen), a server whose certificate has
// another role, a port that does not speak gRPC at all (a coordinator's --http-addr or
// --raft-addr; see IdentifyPort), or a gRPC server of the other security (TLS against
// --insecure, plain text against --certs; see securityMismatch). Msg is one sentence naming Addr and what answers there, e.g.
//
//	127.0.0.1:7008 is the HTTP port (--http-addr) of ddpm coordinator c0 (it answered HTTP/1.1), not its gRPC port: --coordinator takes a coordinator's --grpc-addr, e.g. 127.0.0.1:7001 (the leader's)
type NotCoordinatorError struct {
	Addr string
	Msg  string
}

func (e *NotCoordinatorError) Error() string { return ErrNotCoordinator.Error() + ": " + e.Msg }

// Unwrap returns ErrNotCoordinator.
func (e *NotCoordinatorError) Unwrap() error { return ErrNotCoordinator }

// GRPCPortHint ends a line saying that an address given as a coordinator's is another port:
// which address --coordinator takes.
const GRPCPortHint = "--coordinator takes a coordinator's --grpc-addr (the last field of its --peers entry ID=RAFT=GRPC)"

// notGRPC returns the line saying what answers at addr when the failed attempt err (a
// connection that broke at its handshake: not refused, not timed out, not a certificate
// refusal) met a port that positively is not gRPC (IdentifyPort), with GRPCPortHint; "" when it
// may be a coordinator still (then the call retries as before). Each address is probed until
// one probe ends with an answer (not on its deadline), once per Client.
func (c *Client) notGRPC(ctx context.Context, addr string, err error) string {
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "connection error") || unreached(err) || CertRefusal(err) {
		return ""
	}
	return c.probeOnce(addr, func() (line string, sure bool) {
		what, grpcAddr, speaks, sure := identifyPort(ctx, addr, c.sec)
		if line := securityMismatch(addr, speaks, c.sec); line != "" {
			return line, sure
		}
		if what != "" {
			line = what + ": " + GRPCPortHint
			if grpcAddr != "" {
				line = what + ": --coordinator takes a coordinator's --grpc-addr, e.g. " + grpcAddr + " (the leader's)"
			}
		}
		return line, sure
	})
}

// probeOnce returns the line c.probed holds for addr; else it runs probe (c.mu not held, so
// calls on other addresses go on meanwhile) and returns its line, kept in c.probed when the probe
// is sure of it (a probe cut short by its deadline is tried again at the next failed attempt).
func (c *Client) probeOnce(addr string, probe func() (line string, sure bool)) string {
	c.mu.Lock()
	line, done := c.probed[addr]
	c.mu.Unlock()
	if done {
		return line
	}
	line, sure := probe()
	if sure {
		c.mu.Lock()
		if c.probed == nil {
			c.probed = map[string]string{}
		}
		c.probed[addr] = line
		c.mu.Unlock()
	}
	return line
}

// httpsPort returns the line saying that addr is an HTTPS port when the failed attempt err is
// gRPC's report of an HTTP answer that is no gRPC one over TLS with h2 (a --http-addr served
// with --http-tls answers a gRPC call with 404), naming the coordinator when its /api/status
// answers this client's certificate, with GRPCPortHint; "" for any other err.
func (c *Client) httpsPort(ctx context.Context, addr string, err error) string {
	_, code, ok := strings.Cut(status.Convert(err).Message(), "unexpected HTTP status code received from server: ")
	if !ok {
		return ""
	}
	code, _, _ = strings.Cut(code, ";")
	return c.probeOnce(addr, func() (string, bool) {
		return c.httpsLine(ctx, addr, code), true
	})
}

// httpsLine is httpsPort's line for addr, which answered a gRPC call with HTTP status code.
func (c *Client) httpsLine(ctx context.Context, addr, code string) string {
	line := fmt.Sprintf("%s is an HTTPS port (it answered a gRPC call with HTTP status %s), not a gRPC port (a ddpm coordinator's or trainer's --http-addr with --http-tls?): %s",
		addr, code, GRPCPortHint)
	if cfg := c.sec.HTTPClientTLS(); cfg != nil {
		if id, leader, ok := coordinatorHTTP(ctx, "https://"+addr, cfg); ok {
			line = fmt.Sprintf("%s is the HTTPS port (--http-addr, --http-tls) of ddpm coordinator %s, not its gRPC port: %s", addr, id, GRPCPortHint)
			if leader != "" {
				line = fmt.Sprintf("%s is the HTTPS port (--http-addr, --http-tls) of ddpm coordinator %s, not its gRPC port: --coordinator takes a coordinator's --grpc-addr, e.g. %s (the leader's)", addr, id, leader)
			}
		}
	}
	return line
}

// RaftProtocol is the TLS application protocol (ALPN) a coordinator's raft port announces
// (internal/tlsauth's raftALPN; TestCLIS25IdentifyPort checks the two agree against a real
// replica): IdentifyPort offers it beside gRPC's h2, and a server that picks it is a raft port.
const RaftProtocol = "ddpm-raft/1"

// identifyTimeout bounds the TCP connection, TLS handshake and first answer of IdentifyPort;
// statusTimeout its GET /api/status of an HTTP port, from the request's start.
const (
	identifyTimeout = 2 * time.Second
	statusTimeout   = 3 * time.Second
)

// IdentifyPort says what answers at addr (host:port) when it is positively not a gRPC server,
// from one TLS handshake offering the protocols h2 (gRPC) and RaftProtocol, the server's
// certificate unchecked, sec's (nil or plain text: none) offered, and nothing sent after it:
//
//   - the server picks RaftProtocol: "ADDR is the raft port (--raft-addr) of a ddpm coordinator
//     (its TLS offers raft's protocol ddpm-raft/1, not gRPC's)";
//   - it answers the handshake in plain HTTP/1.x (a ddpm coordinator's or trainer's --http-addr):
//     "ADDR is the HTTP port (--http-addr) of ddpm coordinator c0 (it answered HTTP/1.1), not its
//     gRPC port" when GET /api/status answers as a coordinator's does, grpcAddr then being the
//     gRPC address of the leader it names ("" when it knows none); else "ADDR is an HTTP port (it
//     answered HTTP/1.1), not a gRPC port (a ddpm coordinator's or trainer's --http-addr?)";
//   - it completes TLS without h2: "ADDR speaks TLS but not gRPC (its TLS offers no h2)";
//   - it answers in other plain text: "ADDR answers in plain text, not gRPC (it sent "...")".
//
// It returns "" for a TLS server that picks h2 or sends an HTTP/2 frame in plain text (a gRPC
// server, secure or not), one that closes the connection or stays silent (a raft port of a
// cluster run with --insecure does both, but so does a proxy such as kubectl port-forward whose
// coordinator is starting), and when nothing listens: a coordinator may answer there yet.
// The connection, handshake and first answer take at most identifyTimeout (2 s), the request
// to an HTTP port statusTimeout (3 s) more, each cut short when ctx ends.
func IdentifyPort(ctx context.Context, addr string, sec *tlsauth.Bundle) (what, grpcAddr string) {
	what, grpcAddr, _, _ = identifyPort(ctx, addr, sec)
	return what, grpcAddr
}

// grpcKind is the kind of gRPC server identifyPort met at an address: grpcTLS (it picked h2 in
// its TLS handshake), grpcPlain (it sent an HTTP/2 SETTINGS frame in plain text), or 0 (not
// known to be a gRPC server).
type grpcKind int

const (
	grpcTLS grpcKind = iota + 1
	grpcPlain
)

// securityMismatch is the line of a call that failed at addr, a gRPC server of kind speaks, when
// that server's security is not this client's (sec): a coordinator serving mutual TLS dialled
// with --insecure, or one run with --insecure dialled with --certs. Retrying cannot mend either,
// so the call ends at once (a *NotCoordinatorError: the port is no coordinator this client can
// talk to). "" when they agree or speaks is 0.
func securityMismatch(addr string, speaks grpcKind, sec *tlsauth.Bundle) string {
	switch {
	case speaks == grpcTLS && sec.Insecure():
		return addr + " serves gRPC over TLS (a coordinator started with --certs) and this process runs --insecure: " +
			"give --certs DIR, the certificates its cluster was started with (a ddpm local run's RUN/certs)"
	case speaks == grpcPlain && !sec.Insecure():
		return addr + " serves gRPC in plain text (a coordinator or trainer started with --insecure) and this process uses --certs: " +
			"give --insecure instead of --certs"
	}
	return ""
}

// identifyPort is IdentifyPort, with the kind of gRPC server it met (speaks); sure is false
// when the probe ended on its deadline or ctx's before the server said anything, so that ""
// means only "no answer yet".
func identifyPort(ctx context.Context, addr string, sec *tlsauth.Bundle) (what, grpcAddr string, speaks grpcKind, sure bool) {
	hctx, cancel := context.WithTimeout(ctx, identifyTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(hctx, "tcp", addr)
	if err != nil {
		return "", "", 0, hctx.Err() == nil
	}
	defer raw.Close()
	if dl, ok := hctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	rec := &firstBytes{Conn: raw}
	// Only the protocol the server picks is looked at: the server's certificate is not checked,
	// and nothing is sent once the handshake is done. Ours is offered when sec has one, so that
	// a real coordinator (the probe follows a connection that broke, as one restarting does)
	// accepts the handshake rather than log a refusal.
	cfg := &tls.Config{}
	if sec != nil {
		if c := sec.HTTPClientTLS(); c != nil {
			cfg = c
		}
	}
	cfg.InsecureSkipVerify, cfg.ServerName, cfg.NextProtos = true, "", []string{"h2", RaftProtocol}
	tc := tls.Client(rec, cfg)
	err = tc.HandshakeContext(hctx)
	if err == nil {
		switch tc.ConnectionState().NegotiatedProtocol {
		case RaftProtocol:
			return addr + " is the raft port (--raft-addr) of a ddpm coordinator (its TLS offers raft's protocol " + RaftProtocol + ", not gRPC's)", "", 0, true
		case "h2":
			return "", "", grpcTLS, true
		}
		return addr + " speaks TLS but not gRPC (its TLS offers no h2)", "", 0, true
	}
	var rh tls.RecordHeaderError
	if !errors.As(err, &rh) {
		var ne net.Error
		timedOut := hctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()
		return "", "", 0, !timedOut
	}
	// The handshake read at least the 5 bytes of a record header; the first line may need more.
	var more [256]byte
	for rec.buf.Len() < 200 && !bytes.Contains(rec.buf.Bytes(), []byte("\n")) {
		if _, err := rec.Read(more[:]); err != nil {
			break
		}
	}
	first := rec.buf.Bytes()
	if line, _, _ := bytes.Cut(first, []byte("\r\n")); bytes.HasPrefix(line, []byte("HTTP/1.")) {
		proto, _, _ := bytes.Cut(line, []byte(" "))
		if id, leader, ok := coordinatorHTTP(ctx, "http://"+addr, nil); ok {
			return fmt.Sprintf("%s is the HTTP port (--http-addr) of ddpm coordinator %s (it answered %s), not its gRPC port", addr, id, proto), leader, 0, true
		} else if ctx.Err() != nil { // the caller's time ran out before the answer: ask again later
			return "", "", 0, false
		}
		return fmt.Sprintf("%s is an HTTP port (it answered %s), not a gRPC port (a ddpm coordinator's or trainer's --http-addr?)", addr, proto), "", 0, true
	}
	if len(first) >= 9 && first[3] == 0x4 { // an HTTP/2 SETTINGS frame: a plain-text gRPC server
		return "", "", grpcPlain, true
	}
	line, _, _ := bytes.Cut(first, []byte("\n"))
	line = bytes.TrimSpace(line[:min(len(line), 40)])
	for _, b := range line {
		if b < 0x20 || b > 0x7e {
			return "", "", 0, true
		}
	}
	if len(line) == 0 {
		return "", "", 0, true
	}
	return fmt.Sprintf("%s answers in plain text, not gRPC (it sent %q)", addr, line), "", 0, true
}

// coordinatorHTTP asks the HTTP server at base ("http://host:port", or "https://host:port" with
// the client TLS configuration tlsCfg) for GET /api/status within statusTimeout of its start,
// and reports whether it answers as a coordinator's HTTP port does (a JSON object naming its
// replica), with the replica id and the gRPC address of the leader it names. (/api/summary, the
// smaller document, does not name the leader's gRPC address; of /api/status only the fields
// before "state" are read.)
func coordinatorHTTP(ctx context.Context, base string, tlsCfg *tls.Config) (replica, leaderGRPC string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/status", nil)
	if err != nil {
		return "", "", false
	}
	cl := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: tlsCfg}}
	resp, err := cl.Do(req)
	if err != nil {
		return "", "", false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", false
	}
	dec := json.NewDecoder(bufio.NewReader(io.LimitReader(resp.Body, 1<<16)))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", "", false
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			break
		}
		key, _ := t.(string)
		if key == "state" {
			break
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			break
		}
		s, _ := v.(string)
		switch key {
		case "replica":
			replica = s
		case "leader_grpc":
			leaderGRPC = s
		}
	}
	return replica, leaderGRPC, replica != ""
}

// firstBytes is a connection that keeps the first 512 bytes it reads.
type firstBytes struct {
	net.Conn
	buf bytes.Buffer
}

func (f *firstBytes) Read(p []byte) (int, error) {
	n, err := f.Conn.Read(p)
	if room := 512 - f.buf.Len(); room > 0 && n > 0 {
		f.buf.Write(p[:min(n, room)])
	}
	return n, err
}

// decodeErr turns a gRPC status carrying a state-machine code back into that package's error.
func decodeErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	if st.Code() == codes.Unauthenticated {
		return fmt.Errorf("%w: %s", ErrUnauthenticated, st.Message())
	}
	if st.Code() == codes.PermissionDenied { // "coordinator: permission denied: role trainer may not call ..."
		return fmt.Errorf("%w: %s", ErrPermissionDenied, strings.TrimPrefix(st.Message(), "ddpm: "))
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.Domain != errDomain {
			continue
		}
		if info.Reason == "version_mismatch" {
			return fmt.Errorf("%w: %s", ErrVersionMismatch, info.Metadata["message"])
		}
		if info.Reason == "stale_incarnation" {
			inc, _ := strconv.ParseUint(info.Metadata["incarnation"], 10, 64)
			return &StaleIncarnationError{Current: inc, Address: info.Metadata["address"], Nonce: info.Metadata["process"],
				err: fsm.Result{Code: info.Reason, Message: info.Metadata["message"]}.Err()}
		}
		return fsm.Result{Code: info.Reason, Message: info.Metadata["message"]}.Err()
	}
	return fmt.Errorf("coordinator: %s", st.Message())
}

// StaleIncarnationError is the refusal of a member call (HeartbeatAs, LeaveAs, WatchAssignmentAs,
// ReportProgress, CheckpointReady) that named an incarnation of its trainer id other than the
// id's current one: the id was admitted again since (Join), by another process unless Nonce is
// the caller's own JoinRequest.Nonce (its own rejoin overtook the call). errors.Is(err,
// fsm.ErrStaleIncarnation) holds for it; errors.As gives the current incarnation, its trainer
// address and its process nonce.
type StaleIncarnationError struct {
	Current uint64 // the id's current incarnation
	Address string // the address the current incarnation joined from
	// Nonce is the process nonce the current incarnation joined with; empty when it joined
	// without one or the coordinator is older than nonces (then only Address tells, and it
	// cannot when a newer process reuses the address).
	Nonce string
	err   error
}

func (e *StaleIncarnationError) Error() string { return e.err.Error() }

// Unwrap returns the fsm.ErrStaleIncarnation-wrapping error of the refusal.
func (e *StaleIncarnationError) Unwrap() error { return e.err }

// MsgWaitingForRun is the message a joining trainer logs (WithLog) while the cluster has no run
// config yet: once the coordinators have answered so for 5 s (not during a start-up in which the
// leader commits the config it was given), then every 30 s.
const MsgWaitingForRun = "waiting for a run config"

// SubmitRun submits the run config and returns its hash. A run config that breaks a rule
// returns fsm.ErrInvalidConfig naming every problem; a different run already configured
// returns fsm.ErrConfigMismatch.
func (c *Client) SubmitRun(ctx context.Context, run config.Run) (hash string, err error) {
	req := &api.SubmitRunRequest{RequestId: NewRequestID(), RunYaml: run.Marshal()}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.SubmitRun(ctx, req)
		if err == nil {
			hash = resp.ConfigHash
		}
		return err
	})
	return hash, err
}

// JoinRequest describes a trainer joining. ConfigHash may be empty to accept the cluster's run.
// Nonce is the process's random token (NewProcessNonce), the same for every Join of the
// process: stale refusals name the current incarnation's (StaleIncarnationError.Nonce).
type JoinRequest struct {
	ID, Address, Version, ConfigHash string
	Held                             []fsm.Held // committed checkpoints on this trainer's volume
	Nonce                            string
}

// NewProcessNonce returns a random token naming one trainer process (32 hex digits), for
// JoinRequest.Nonce.
func NewProcessNonce() string { return NewRequestID() }

// Joined is the answer to Join: the run config in force, the generation at join time, and the
// incarnation this Join admitted the id as (never 0 from a current coordinator), which the
// member calls carry (HeartbeatAs, ...). Abandoned lists the checkpoints rollbacks abandoned
// (fsm.State.StillAbandoned): the trainer uncommits those its volume holds as committed.
type Joined struct {
	Run         config.Run
	ConfigHash  string
	Generation  uint64
	Incarnation uint64
	Abandoned   []fsm.Held
}

// Join joins the trainer, waiting (retrying) while no run config is submitted yet. Refusals:
// ErrVersionMismatch, fsm.ErrConfigMismatch, fsm.ErrRunFinished.
func (c *Client) Join(ctx context.Context, j JoinRequest) (Joined, error) {
	req := &api.JoinRequest{RequestId: NewRequestID(), Id: j.ID, Address: j.Address, Version: j.Version, ConfigHash: j.ConfigHash,
		ProcessNonce: j.Nonce}
	for _, h := range j.Held {
		req.Held = append(req.Held, &api.CoordHeldCheckpoint{Step: h.Step, Sha256: h.SHA256})
	}
	var waitSince, warned time.Time
	for {
		var resp *api.JoinResponse
		err := c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
			var err error
			resp, err = cl.Join(ctx, req)
			return err
		})
		if err == nil {
			c.learn(resp.Replicas)
		}
		if errors.Is(err, fsm.ErrNoRun) {
			// Coordinators started without --config wait for one; say what we wait for once the
			// answers have said so for noRunWarnAfter: replicas given the config answer so too until
			// their leader has committed it (start-up, a trainer started with them), and the
			// hint would blame a config that was given.
			if waitSince.IsZero() {
				waitSince = time.Now()
			}
			if c.log != nil && time.Since(waitSince) >= noRunWarnAfter && time.Since(warned) >= warnEvery {
				warned = time.Now()
				c.log.Warn(MsgWaitingForRun, "hint", "no coordinator was given the run config (--config or the run flags); start one with it")
			}
			// A refusal is not deduplicated as success: a fresh id lets the retry apply.
			req.RequestId = NewRequestID()
			t := time.NewTimer(c.backoff * 5)
			select {
			case <-ctx.Done():
				t.Stop()
				return Joined{}, fmt.Errorf("%w: %v", err, ctx.Err())
			case <-t.C:
			}
			continue
		}
		if err != nil {
			return Joined{}, err
		}
		run, err := config.Parse(resp.RunYaml)
		if err != nil {
			return Joined{}, fmt.Errorf("coordinator: run config from the cluster: %w", err)
		}
		return Joined{Run: run, ConfigHash: resp.ConfigHash, Generation: resp.Generation, Incarnation: resp.Incarnation,
			Abandoned: HeldOf(resp.Abandoned)}, nil
	}
}

// HeldOf converts a wire list of checkpoints (JoinResponse or Assignment "abandoned") to
// fsm.Held values; nil entries are skipped.
func HeldOf(l []*api.CoordHeldCheckpoint) []fsm.Held {
	var out []fsm.Held
	for _, h := range l {
		if h != nil {
			out = append(out, fsm.Held{Step: h.Step, SHA256: h.Sha256})
		}
	}
	return out
}

// Heartbeat is HeartbeatAs with incarnation 0: the heartbeat counts for whichever process holds
// the id now (the way of clients older than incarnations).
func (c *Client) Heartbeat(ctx context.Context, id string) (generation uint64, err error) {
	return c.HeartbeatAs(ctx, id, 0)
}

// HeartbeatAs tells the cluster that incarnation (Joined.Incarnation; 0: unchecked) of trainer
// id is alive and returns the current generation number. fsm.ErrUnknownMember means the trainer
// was removed and must Join again; a *StaleIncarnationError that the id was admitted again since.
func (c *Client) HeartbeatAs(ctx context.Context, id string, incarnation uint64) (generation uint64, err error) {
	req := &api.HeartbeatRequest{RequestId: NewRequestID(), Id: id, Incarnation: incarnation}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.Heartbeat(ctx, req)
		if err == nil {
			generation = resp.Generation
			c.learn(resp.Replicas)
		}
		return err
	})
	return generation, err
}

// Leave is LeaveAs with incarnation 0: it removes whichever process holds the id now.
func (c *Client) Leave(ctx context.Context, id string) (generation uint64, err error) {
	return c.LeaveAs(ctx, id, 0)
}

// LeaveAs removes incarnation (0: whichever) of trainer id from the cluster at once (a planned
// stop) and returns the generation in force after it; the generation it had a rank in ends, and
// its peers' next one starts without it instead of after its heartbeat timeout. Leaving is
// idempotent; a stale incarnation is refused with a *StaleIncarnationError and removes nothing.
func (c *Client) LeaveAs(ctx context.Context, id string, incarnation uint64) (generation uint64, err error) {
	req := &api.LeaveRequest{RequestId: NewRequestID(), Id: id, Incarnation: incarnation}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.Leave(ctx, req)
		if err == nil {
			generation = resp.Generation
		}
		return err
	})
	return generation, err
}

// ReportProgress reports a finished step (req.Id, Incarnation, Generation, Step, Loss and the
// other metrics). RequestId is filled in when empty. fsm.ErrStaleGeneration means a newer
// generation exists: abandon the step and follow the new assignment; a *StaleIncarnationError
// that req.Incarnation (when not 0) is no longer the id's current one.
func (c *Client) ReportProgress(ctx context.Context, req *api.ReportProgressRequest) (generation uint64, err error) {
	if req.RequestId == "" {
		req.RequestId = NewRequestID()
	}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.ReportProgress(ctx, req)
		if err == nil {
			generation = resp.Generation
		}
		return err
	})
	return generation, err
}

// CheckpointReady reports that this rank wrote and fsynced the checkpoint of req.Step with
// req.Sha256 (hex) and req.Size bytes. RequestId is filled in when empty. A non-zero
// req.Incarnation that is no longer the id's current one gives a *StaleIncarnationError.
func (c *Client) CheckpointReady(ctx context.Context, req *api.CheckpointReadyRequest) (generation uint64, err error) {
	if req.RequestId == "" {
		req.RequestId = NewRequestID()
	}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.CheckpointReady(ctx, req)
		if err == nil {
			generation = resp.Generation
		}
		return err
	})
	return generation, err
}

// Status returns one replica's view of the cluster.
func (c *Client) Status(ctx context.Context) (*api.StatusResponse, error) {
	resp, _, err := c.StatusStore(ctx)
	return resp, err
}

// StatusStore is Status with the answering replica's store failure: the cause of
// MsgStoreFailing while its raft log or snapshots cannot store what it receives (a full disk),
// "" while they can (StoreFailingHeader).
func (c *Client) StatusStore(ctx context.Context) (*api.StatusResponse, string, error) {
	var resp *api.StatusResponse
	var failing string
	err := c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		var hdr metadata.MD
		var err error
		resp, err = cl.Status(ctx, &api.StatusRequest{}, grpc.Header(&hdr))
		if err == nil {
			c.learn(resp.Replicas)
			failing = ""
			if v := hdr.Get(StoreFailingHeader); len(v) > 0 {
				failing = v[0]
			}
		}
		return err
	})
	return resp, failing, err
}

// RollbackRun abandons the committed checkpoints after step toStep and restarts the run from
// toStep (see fsm.Rollback) and returns the generation that restarts from it. Refusals:
// fsm.ErrBadRollback (toStep is not a committed checkpoint, no member holds it, or nothing is
// newer; the message names the committed steps and holders), fsm.ErrRunFinished, fsm.ErrNoRun.
// A retry after a lost answer applies once (one request id).
func (c *Client) RollbackRun(ctx context.Context, toStep int64) (generation uint64, err error) {
	req := &api.RollbackRunRequest{RequestId: NewRequestID(), ToStep: toStep}
	err = c.call(ctx, func(ctx context.Context, cl api.CoordinatorClient) error {
		resp, err := cl.RollbackRun(ctx, req)
		if err == nil {
			generation = resp.Generation
		}
		return err
	})
	return generation, err
}

// State returns the replicated state as one replica sees it.
func (c *Client) State(ctx context.Context) (*fsm.State, error) {
	resp, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	return fsm.Decode(resp.StateJson)
}

// WatchAssignment is WatchAssignmentAs with incarnation 0 (unchecked).
func (c *Client) WatchAssignment(ctx context.Context, id string, fn func(*api.Assignment) error) error {
	return c.WatchAssignmentAs(ctx, id, 0, fn)
}

// WatchAssignmentAs calls fn with member id's assignment now and after every change, until ctx
// ends (returns nil), fn returns an error (returned as is), the member is unknown
// (fsm.ErrUnknownMember: join again), or incarnation (when not 0) is no longer the id's current
// one (*StaleIncarnationError). Broken streams reconnect to another replica by themselves; an
// assignment equal to the one fn saw last is not repeated.
func (c *Client) WatchAssignmentAs(ctx context.Context, id string, incarnation uint64, fn func(*api.Assignment) error) error {
	var last *api.Assignment
	var fnErr error
	for ctx.Err() == nil {
		c.mu.Lock()
		addr, cc := c.addrs[c.cur], c.conns[c.cur]
		c.mu.Unlock()
		stream, err := api.NewCoordinatorClient(cc).WatchAssignment(ctx, &api.WatchAssignmentRequest{Id: id, Incarnation: incarnation})
		if err == nil {
			for {
				a, rerr := stream.Recv()
				if rerr != nil {
					err = rerr
					break
				}
				if last != nil && proto.Equal(a, last) {
					continue
				}
				last = a
				if fnErr = fn(a); fnErr != nil {
					return fnErr
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && err != io.EOF && !retryable(err) {
			return decodeErr(err)
		}
		c.mu.Lock()
		if c.addrs[c.cur] == addr {
			c.cur = (c.cur + 1) % len(c.conns)
		}
		c.mu.Unlock()
		t := time.NewTimer(c.backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}
