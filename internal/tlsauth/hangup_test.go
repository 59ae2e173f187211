package tlsauth

import (
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// TestSilentHangupNotRefused: a peer that closes its TCP connection before sending any byte (a
// client or replica stopping mid-dial) is no refusal on the gRPC port nor on the raft port (the
// old code warned 'tlsauth: refused connection ... err=EOF'); a certificate of another CA still
// is, one line.
func TestSilentHangupNotRefused(t *testing.T) {
	dir, foreign := newDir(t), newDir(t)
	rec := &recorder{}
	b, err := Load(Config{Dir: dir, Logger: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	addr := server(t, b)
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
	hangUp := func(target string) {
		t.Helper()
		c, err := net.Dial("tcp", target)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	for range 3 {
		hangUp(addr)
		hangUp(rln.Addr().String())
	}
	time.Sleep(300 * time.Millisecond) // the servers meet the EOFs

	c, err := tls.Dial("tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: poolOf(t, dir),
		Certificates: []tls.Certificate{pairOf(t, foreign)}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.Read(make([]byte, 1))
	counted(t, b.refusals, 1)
	lines := rec.lines()
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "tlsauth: refused connection remote=127.0.0.1:") ||
		!strings.Contains(lines[0], "x509: certificate signed by unknown authority") {
		t.Fatalf("after 6 silent hang-ups and one foreign certificate, log:\n%s", strings.Join(lines, "\n"))
	}
}
