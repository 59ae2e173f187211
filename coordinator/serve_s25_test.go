package coordinator

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// acceptFails is a listener whose Accept fails for good (not a temporary error, which the
// servers retry), as a socket broken under a running process does.
type acceptFails struct{ net.Listener }

func (acceptFails) Accept() (net.Conn, error) { return nil, errors.New("accept: socket gone") }

// TestNodeServeStopLoggedS25: a replica whose gRPC or HTTP server stops serving (its listener's
// Accept fails for good) logs one ERROR line naming the flag, the address and the error; the gRPC
// one also ends the node's service (Fatal, ErrGRPCStopped: `ddpm coordinator` exits 1 and is
// restarted) and /readyz answers 503 naming it. Close, the deliberate stop, logs no such line.
// Both errors were dropped: the replica ran on answering nothing on the port, saying nothing.
func TestNodeServeStopLoggedS25(t *testing.T) {
	a := freeAddrs(t, 3)
	var buf tlsauthtest.Log
	peers := []Peer{{ID: "n0", RaftAddr: a[0], GRPCAddr: a[1]}}
	node, err := StartNode(NodeConfig{ID: "n0", RaftAddr: a[0], GRPCAddr: a[1], HTTPAddr: a[2], Peers: peers,
		DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: insecureBundle(t),
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	broken := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return acceptFails{l}
	}

	// The HTTP server: the line, and the node serves on (no Fatal).
	node.serveHTTP(broken())
	wantHTTP := `level=ERROR msg="HTTP server stopped serving" addr="--http-addr ` + a[2] + `" err="accept: socket gone"`
	if got := strings.TrimSpace(buf.String()); !strings.HasSuffix(got, wantHTTP) || strings.Count(got, "\n") != 0 {
		t.Fatalf("log after the HTTP server's failed accept:\n%s\nwant one line ending %s", got, wantHTTP)
	}
	select {
	case err := <-node.Fatal():
		t.Fatalf("an HTTP server's stop ended the node: %v", err)
	default:
	}

	// The gRPC server: the line, Fatal, and /readyz 503 naming it.
	node.serveGRPC(broken())
	wantGRPC := `level=ERROR msg="gRPC server stopped serving" addr="--grpc-addr ` + a[1] + `" err="accept: socket gone"`
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[1], wantGRPC) {
		t.Fatalf("log after the gRPC server's failed accept:\n%s\nwant a second line ending %s", buf.String(), wantGRPC)
	}
	wantErr := "coordinator: gRPC server stopped serving on --grpc-addr " + a[1] +
		": accept: socket gone; stopping the replica (exit 1) so that a restart binds the port again"
	select {
	case err := <-node.Fatal():
		if !errors.Is(err, ErrGRPCStopped) || err.Error() != wantErr {
			t.Fatalf("Fatal: %v\nwant %s (ErrGRPCStopped)", err, wantErr)
		}
	case <-time.After(time.Minute):
		t.Fatal("no error on Fatal a minute after the gRPC server stopped")
	}
	resp, err := http.Get("http://" + a[2] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(string(body), "not ready n0 ") ||
		!strings.HasSuffix(string(body), ": "+wantErr+"\n") {
		t.Fatalf("/readyz: %d %q\nwant 503 \"not ready n0 ROLE: %s\"", resp.StatusCode, body, wantErr)
	}

	// Close stops both servers on purpose: no further line.
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(strings.TrimSpace(buf.String()), "\n") + 1; got != 2 {
		t.Fatalf("log after Close:\n%s\nwant the 2 lines above only", buf.String())
	}
}
