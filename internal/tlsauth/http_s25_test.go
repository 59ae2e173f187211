package tlsauth

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// httpsS25Server serves HTTPServer (b) on a loopback port over a mux answering each of /healthz,
// /readyz, /api/status and /metrics with "served PATH", and returns its address.
func httpsS25Server(t *testing.T, b *Bundle) string {
	t.Helper()
	mux := http.NewServeMux()
	for _, p := range []string{"/healthz", "/readyz", "/api/status", "/metrics"} {
		mux.HandleFunc("GET "+p, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "served %s\n", p) })
	}
	srv, err := b.HTTPServer(mux)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestHTTPS25GuardByPath: over HTTPServer, a client without a certificate (verifying the server
// against ca.crt, as curl --cacert and a kubelet probe with scheme HTTPS do) gets /healthz and
// /readyz and a 401 with one line on /api/status and /metrics; certificates of role operator,
// coordinator and none are served everything; a trainer's gets 403 naming its role; a
// certificate of another CA fails the handshake; plain HTTP gets net/http's 400. The refusals are
// logged rate-limited: two requests without a certificate from one host make one line. Before
// HTTPServer and GuardHTTP existed there was no HTTPS at all.
func TestHTTPS25GuardByPath(t *testing.T) {
	dir, foreign := newDir(t), newDir(t)
	log := &syncBuf{}
	addr := httpsS25Server(t, load(t, dir, log))
	roots := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: poolOf(t, dir)}

	for _, p := range []string{"/healthz", "/readyz"} {
		code, body, err := testutil.HTTPSGet(t, roots, addr, p)
		if err != nil || code != 200 || body != "served "+p+"\n" {
			t.Errorf("GET %s without a certificate: %d %q %v, want 200 %q", p, code, body, err, "served "+p+"\n")
		}
	}
	for _, p := range []string{"/api/status", "/metrics"} {
		want := "ddpm: no client certificate: " + p + " needs one signed by this cluster's CA, of role coordinator or operator or none " +
			"(curl --cert DIR/node.crt --key DIR/node.key --cacert DIR/ca.crt)\n"
		code, body, err := testutil.HTTPSGet(t, roots, addr, p)
		if err != nil || code != http.StatusUnauthorized || body != want {
			t.Errorf("GET %s without a certificate: %d %q %v, want 401 %q", p, code, body, err, want)
		}
	}

	withCert := func(d string) *tls.Config {
		c := roots.Clone()
		c.Certificates = []tls.Certificate{pairOf(t, d)}
		return c
	}
	for _, d := range []string{dir, issueS25(t, dir, RoleOperator), issueS25(t, dir, RoleCoordinator)} {
		for _, p := range []string{"/api/status", "/metrics", "/healthz"} {
			code, body, err := testutil.HTTPSGet(t, withCert(d), addr, p)
			if err != nil || code != 200 || body != "served "+p+"\n" {
				t.Errorf("GET %s with %s: %d %q %v, want 200", p, filepath.Base(d), code, body, err)
			}
		}
	}
	wantTrainer := "ddpm: role trainer may not read /metrics (roles allowed: coordinator, operator, or a certificate without a role)\n"
	if code, body, err := testutil.HTTPSGet(t, withCert(issueS25(t, dir, RoleTrainer)), addr, "/metrics"); err != nil ||
		code != http.StatusForbidden || body != wantTrainer {
		t.Errorf("GET /metrics with a trainer's certificate: %d %q %v, want 403 %q", code, body, err, wantTrainer)
	}

	// Another CA's certificate: refused in the handshake, whatever the path.
	_, _, err := testutil.HTTPSGet(t, withCert(foreign), addr, "/healthz")
	if err == nil || !strings.Contains(err.Error(), "tls: unknown certificate authority") {
		t.Errorf("GET /healthz with another CA's certificate: err %v, want the handshake refused (unknown certificate authority)", err)
	}
	// Plain HTTP to the HTTPS port.
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP GET /healthz: %d, want 400", res.StatusCode)
	}

	waitLog(t, log, `msg="tlsauth: refused HTTPS connection" remote=127.0.0.1:`, "certificate signed by unknown authority")
	s := log.String()
	if n := strings.Count(s, `msg="tlsauth: refused HTTP request"`); n != 2 {
		t.Errorf("%d lines 'refused HTTP request', want 2 (one for the two requests without a certificate, one for the trainer's):\n%s", n, s)
	}
	for _, w := range []string{`path=/api/status cert_role="" reason="no client certificate"`, `path=/metrics cert_role=trainer reason="role trainer"`} {
		if !strings.Contains(s, w) {
			t.Errorf("log lacks %q:\n%s", w, s)
		}
	}
	if strings.Contains(s, "TLS handshake error") {
		t.Errorf("net/http's own handshake line was logged:\n%s", s)
	}
}

// TestHTTPS25Insecure: a plain-text Bundle has no certificate to serve HTTPS with.
func TestHTTPS25Insecure(t *testing.T) {
	b, err := Load(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.HTTPServer(http.NewServeMux()); err == nil || b.HTTPServerTLS() != nil || b.HTTPClientTLS() != nil {
		t.Errorf("HTTPServer of an insecure Bundle: err %v, want an error and no TLS configs", err)
	}
}

// issueS25 makes a certificate directory of role r from dir's CA (as ddpm certs issue does).
func issueS25(t *testing.T, dir string, r Role) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "certs-"+string(r))
	if _, err := Issue(dir, out, IssueOptions{Role: r}); err != nil {
		t.Fatal(err)
	}
	return out
}
