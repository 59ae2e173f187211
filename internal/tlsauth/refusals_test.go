package tlsauth

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a slog.Handler that keeps every record, for counting lines.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recorder) WithGroup(string) slog.Handler            { return h }

func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}

// lines returns the records so far as "msg k=v k=v" strings.
func (h *recorder) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
			return true
		})
		out = append(out, b.String())
	}
	return out
}

// counted waits until the limiter has seen n refusals (logged or suppressed) in all, so that
// the servers' goroutines are done with every connection the test made.
func counted(t *testing.T, l *refusalLimiter, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		got := l.total
		l.mu.Unlock()
		if got >= n {
			if got > n {
				t.Fatalf("limiter counted %d refusals, want %d", got, n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("limiter counted %d refusals within 5s, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func setWindow(l *refusalLimiter, d time.Duration) {
	l.mu.Lock()
	l.window = d
	l.mu.Unlock()
}

// TestRefusalsRateLimited: repeated refused connections from one host (each from a new port)
// give one line per (host, reason) within the window; the first refusal after the window is
// logged with the number suppressed, and opens a new window.
func TestRefusalsRateLimited(t *testing.T) {
	dir, foreign := newDir(t), newDir(t)
	rec := &recorder{}
	b, err := Load(Config{Dir: dir, Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	addr := server(t, b)
	// A client that trusts our CA but holds a certificate of another CA, dialing afresh each
	// time like a retrying trainer: each attempt is one server-side handshake refusal.
	foreignCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: poolOf(t, dir), Certificates: []tls.Certificate{pairOf(t, foreign)}, NextProtos: []string{"h2"}}
	refuse := func() {
		t.Helper()
		c, err := tls.Dial("tcp", addr, foreignCfg)
		if err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Fatalf("client read: %v, want the server's unknown-authority alert", err)
		}
	}
	plain := func(target string) {
		t.Helper()
		c, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 64)) // the server answers with an alert or closes
	}

	const n = 6
	for range n {
		refuse()
	}
	counted(t, b.refusals, n)
	lines := rec.lines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "tlsauth: refused connection remote=127.0.0.1:") ||
		!strings.Contains(lines[0], "x509: certificate signed by unknown authority") || strings.Contains(lines[0], "suppressed") {
		t.Fatalf("after %d refusals within the window, log:\n%s", n, strings.Join(lines, "\n"))
	}

	// Another reason from the same host has its own line; so do refusals on a raft port, whose
	// error text names the remote port that changes per connection.
	for range 3 {
		plain(addr)
	}
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := b.RaftStreamLayer(rln, nil)
	defer sl.Close()
	go func() {
		for {
			c, err := sl.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 1)); c.Close() }()
		}
	}()
	for range 4 {
		plain(rln.Addr().String())
	}
	counted(t, b.refusals, n+3+4)
	lines = rec.lines()
	if len(lines) != 3 || !strings.Contains(lines[1], "tlsauth: refused connection") || !strings.Contains(lines[1], "first record does not look like a TLS handshake") ||
		!strings.Contains(lines[2], "tlsauth: refused raft connection") || !strings.Contains(lines[2], "first record does not look like a TLS handshake") {
		t.Fatalf("after plain-text attempts, log:\n%s", strings.Join(lines, "\n"))
	}

	// The window passes: the next refusal is logged with the count of those suppressed.
	setWindow(b.refusals, 0)
	refuse()
	counted(t, b.refusals, n+3+4+1)
	lines = rec.lines()
	if len(lines) != 4 || !strings.Contains(lines[3], "x509: certificate signed by unknown authority") || !strings.HasSuffix(lines[3], fmt.Sprintf(" suppressed=%d", n-1)) {
		t.Fatalf("after the window, log:\n%s", strings.Join(lines, "\n"))
	}
	// That line opened a new window: a repeat within it is counted again, not logged.
	setWindow(b.refusals, time.Hour)
	refuse()
	counted(t, b.refusals, n+3+4+2)
	if got := len(rec.lines()); got != 4 {
		t.Fatalf("a repeat within the new window was logged: %d lines", got)
	}
}

// TestRefusalLimiterBounded: the limiter remembers at most max entries; expired ones go first,
// then the oldest, and a forgotten (host, reason) is logged again.
func TestRefusalLimiterBounded(t *testing.T) {
	rec := &recorder{}
	l := newRefusalLimiter(slog.New(rec))
	l.max = 4
	for i := range 10 {
		l.warn("tlsauth: refused connection", fmt.Sprintf("10.0.0.%d:4000", i), "bad certificate")
		l.warn("tlsauth: refused connection", fmt.Sprintf("10.0.0.%d:4001", i), "bad certificate")
		if len(l.seen) > 4 {
			t.Fatalf("after host %d the limiter holds %d entries, want at most 4", i, len(l.seen))
		}
	}
	if got := len(rec.lines()); got != 10 {
		t.Fatalf("%d lines for 10 hosts, want 10", got)
	}
	for i := 6; i < 10; i++ {
		if c := l.seen[refusalKey{"tlsauth: refused connection", fmt.Sprintf("10.0.0.%d", i), "bad certificate"}]; c == nil || c.suppressed != 1 {
			t.Errorf("host 10.0.0.%d: entry %+v, want one suppressed", i, c)
		}
	}
	// Host 0 was dropped to make room: it is logged again, without a count.
	l.warn("tlsauth: refused connection", "10.0.0.0:4002", "bad certificate")
	lines := rec.lines()
	if len(lines) != 11 || lines[10] != "tlsauth: refused connection remote=10.0.0.0:4002" {
		t.Fatalf("forgotten host: %q", lines[len(lines)-1])
	}
	// Expired entries are dropped before live ones.
	setWindow(l, 0)
	l.warn("tlsauth: refused connection", "10.0.0.99:1", "bad certificate")
	if len(l.seen) != 1 {
		t.Errorf("after the window the limiter holds %d entries, want 1 (the new one)", len(l.seen))
	}
}

func TestRefusalReasonDropsPerConnectionParts(t *testing.T) {
	op := &net.OpError{Op: "read", Net: "tcp", Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7000},
		Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53122}, Err: fmt.Errorf("connection reset by peer")}
	err := fmt.Errorf("tlsauth: raft peer 127.0.0.1:53122: %w", op)
	if got, want := refusalReason(err, "127.0.0.1:53122"), "tlsauth: raft peer 127.0.0.1: read: connection reset by peer"; got != want {
		t.Errorf("refusalReason = %q, want %q", got, want)
	}
}

// TestRefusalCountLoggedWhenRepeatsStop: repeats suppressed within a window are logged with
// their count when the window ends, even if no refusal follows (the old limiter held the count
// until the next refusal, which a burst that stopped never sent); a window without repeats logs
// nothing more.
func TestRefusalCountLoggedWhenRepeatsStop(t *testing.T) {
	rec := &recorder{}
	l := newRefusalLimiter(slog.New(rec))
	setWindow(l, 100*time.Millisecond)
	for port := range 3 {
		l.warn("tlsauth: refused connection", fmt.Sprintf("10.0.0.9:%d", 5000+port), "bad certificate", "err", "x509")
	}
	l.warn("tlsauth: refused connection", "10.0.0.8:5000", "bad certificate", "err", "x509")
	if got := rec.lines(); len(got) != 2 {
		t.Fatalf("within the window: %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.lines()) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // two more windows: nothing new to say
	want := []string{
		"tlsauth: refused connection remote=10.0.0.9:5000 err=x509",
		"tlsauth: refused connection remote=10.0.0.8:5000 err=x509",
		"tlsauth: refused connection remote=10.0.0.9:5002 err=x509 suppressed=2",
	}
	if got := rec.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The window the count opened passed without repeats: the next refusal is logged at once.
	l.warn("tlsauth: refused connection", "10.0.0.9:5003", "bad certificate", "err", "x509")
	if got := rec.lines(); len(got) != 4 || got[3] != "tlsauth: refused connection remote=10.0.0.9:5003 err=x509" {
		t.Fatalf("log:\n%s", strings.Join(got, "\n"))
	}
}
