package main

import (
	"crypto/tls"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerS25HTTPTLS: a real `ddpm trainer --http-tls --certs TRAINER-DIR` process (joining
// coordinators that are not there, so it stays up) serves --http-addr over HTTPS with its
// trainer certificate: /healthz and /readyz to a client without a certificate (a kubelet probe
// with scheme HTTPS), /metrics only to an operator's certificate (401 without one, 403 for a
// trainer's), each refusal one log line. Mistakes exit 2 with one line before --data-dir is
// made: --insecure, --standalone, no --http-addr. On the old code `--http-tls` was an unknown
// flag (exit 2 before anything started).
func TestTrainerS25HTTPTLS(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	_, roles := s25Certs(t, bin, "trainer", "operator")
	httpAddr, dir := freeAddr(t), filepath.Join(t.TempDir(), "t0")
	log, noCert := startHTTPSTrainer(t, bin, roles["trainer"], httpAddr, dir, "--http-tls")
	if code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, "/readyz"); err != nil || code != 503 || !strings.HasPrefix(body, "not a member: ") {
		t.Errorf("GET /readyz without a certificate: %d %q %v, want 503 'not a member: ...' (the probe answered)", code, body, err)
	}
	want := "ddpm: no client certificate: /metrics needs one signed by this cluster's CA, of role coordinator or operator or none " +
		"(curl --cert DIR/node.crt --key DIR/node.key --cacert DIR/ca.crt)\n"
	if code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, "/metrics"); err != nil || code != 401 || body != want {
		t.Errorf("GET /metrics without a certificate: %d %q %v, want 401 %q", code, body, err, want)
	}
	client := func(d string) *tls.Config {
		b, err := tlsauth.Load(tlsauth.Config{Dir: d, ServerName: tlsauth.NodeName})
		if err != nil {
			t.Fatal(err)
		}
		return b.HTTPClientTLS()
	}
	if code, body, err := testutil.HTTPSGet(t, client(roles["operator"]), httpAddr, "/metrics"); err != nil || code != 200 || !strings.Contains(body, "ddpm_trainer_") {
		t.Errorf("GET /metrics with an operator's certificate: %d %.200q %v, want 200 with ddpm_trainer_ series", code, body, err)
	}
	wantTrainer := "ddpm: role trainer may not read /metrics (roles allowed: coordinator, operator, or a certificate without a role)\n"
	if code, body, err := testutil.HTTPSGet(t, client(roles["trainer"]), httpAddr, "/metrics"); err != nil || code != 403 || body != wantTrainer {
		t.Errorf("GET /metrics with a trainer's certificate: %d %q %v, want 403 %q", code, body, err, wantTrainer)
	}
	log.Wait(t, `"msg":"tlsauth: refused HTTP request"`, `"cert_role":"trainer","reason":"role trainer"`,
		`"path":"/metrics","cert_role":"","reason":"no client certificate"`)

	bad := filepath.Join(t.TempDir(), "t1")
	const fix = "needs --certs DIR, whose node certificate it serves and whose CA checks the clients"
	runRefused(t, bin, 2, "ddpm: trainer: --http-tls "+fix+"; --insecure gives neither\n", "trainer", "--preset", "mnist",
		"--coordinator", closedAddr(t), "--listen", freeAddr(t), "--http-addr", freeAddr(t), "--data-dir", bad, "--insecure", "--http-tls")
	runRefused(t, bin, 2, "ddpm: trainer: --http-tls needs --http-addr, the address to serve HTTPS on\n", "trainer", "--preset", "mnist",
		"--coordinator", closedAddr(t), "--listen", freeAddr(t), "--data-dir", bad, "--certs", roles["trainer"], "--http-tls")
	runRefused(t, bin, 2, "ddpm: --http-tls is for a cluster trainer: a standalone trainer serves no HTTP\n", "trainer", "--preset", "mnist",
		"--standalone", "--data-dir", bad, "--http-tls")
	mustNotExist(t, bad)
}

// startHTTPSTrainer starts a real `ddpm trainer` t0 (flags extra added) with the certificates
// certs, serving --http-addr httpAddr over HTTPS and joining coordinators that are not there (so
// it stays up), with its volume at dir, and returns once /healthz answers 200 "ok: ..." over
// HTTPS to a client without a certificate (a minute at most; the trainer's exit ends the wait):
// its log, and that client's TLS config (the run's CA, no certificate). A cleanup kills it.
func startHTTPSTrainer(t *testing.T, bin, certs, httpAddr, dir string, extra ...string) (*tlsauthtest.Log, *tls.Config) {
	t.Helper()
	log := &tlsauthtest.Log{}
	cmd := exec.Command(bin, append([]string{"trainer", "--id", "t0", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t),
		"--http-addr", httpAddr, "--data-dir", dir, "--certs", certs}, extra...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	noCert := &tls.Config{RootCAs: runCAPool(t, certs), ServerName: tlsauth.NodeName, MinVersion: tls.VersionTLS13}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, "/healthz")
		if err == nil && code == 200 && strings.HasPrefix(body, "ok: ") {
			return log, noCert
		}
		select {
		case <-exited:
			t.Fatalf("the trainer exited before its /healthz answered over HTTPS:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz over HTTPS without a certificate: %d %q %v after a minute\n%s", code, body, err, log.String())
		}
	}
}
