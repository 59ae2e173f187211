package main

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// failingListener is a listener whose Accept fails for good, as a closed or broken socket does.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) {
	return nil, errors.New("accept: too many open files")
}

// TestCoordinatorS25HTTPSStopLogged: an --http-tls server that stops for anything but its own
// Close logs MsgHTTPSStopped at ERROR with the flag, the address and the error (the goroutine
// dropped the error, so a replica ran on with nothing on --http-addr and no line saying so);
// a Close logs nothing.
func TestCoordinatorS25HTTPSStopLogged(t *testing.T) {
	b := tlsauthtest.Load(t, tlsauthtest.Dir(t), nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	logs := &tlsauthtest.Log{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	srv, err := b.HTTPServer(http.NewServeMux())
	if err != nil {
		t.Fatal(err)
	}
	serveHTTPS(srv, failingListener{l}, "--http-addr 127.0.0.1:9", log)
	want := `level=ERROR msg="` + MsgHTTPSStopped + `" addr="--http-addr 127.0.0.1:9" err="accept: too many open files"`
	if got := strings.TrimSpace(logs.String()); !strings.HasSuffix(got, want) || strings.Count(got, "\n") != 0 {
		t.Errorf("log after a failed accept:\n%s\nwant one line ending %s", got, want)
	}

	// A closed server's Serve returns http.ErrServerClosed: no line.
	closed := &tlsauthtest.Log{}
	srv2, err := b.HTTPServer(http.NewServeMux())
	if err != nil {
		t.Fatal(err)
	}
	srv2.Close()
	serveHTTPS(srv2, l, "--http-addr x", slog.New(slog.NewTextHandler(closed, nil)))
	if s := closed.String(); s != "" {
		t.Errorf("a closed server logged %q", s)
	}
}
