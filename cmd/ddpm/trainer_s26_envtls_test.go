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

// TestTrainerS26HTTPTLSFromEnv: `ddpm trainer` reads DDPM_HTTP_TLS as a coordinator does (when
// the command line leaves --http-tls unset): a trainer process with DDPM_HTTP_TLS=true serves
// --http-addr over HTTPS (/healthz to a client without a certificate), and its mistakes name
// the variable: with --insecure, or --standalone, exit 2 and one line. DDPM_HTTP_TLS was read by
// coordinators only: the trainer served plain HTTP and the mistakes ran on.
func TestTrainerS26HTTPTLSFromEnv(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	_, roles := s25Certs(t, bin, "trainer")
	t.Setenv("DDPM_HTTP_TLS", "true")
	bad := filepath.Join(t.TempDir(), "bad")
	runRefused(t, bin, 2, "ddpm: trainer: DDPM_HTTP_TLS needs --certs DIR, whose node certificate it serves and whose CA checks the clients; --insecure gives neither\n",
		"trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t), "--http-addr", freeAddr(t), "--data-dir", bad, "--insecure")
	runRefused(t, bin, 2, "ddpm: DDPM_HTTP_TLS is for a cluster trainer: a standalone trainer serves no HTTP\n",
		"trainer", "--preset", "mnist", "--standalone", "--data-dir", bad)
	mustNotExist(t, bad)

	httpAddr := freeAddr(t)
	log := &tlsauthtest.Log{}
	cmd := exec.Command(bin, "trainer", "--id", "t0", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t),
		"--http-addr", httpAddr, "--data-dir", filepath.Join(t.TempDir(), "t0"), "--certs", roles["trainer"])
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	pool := runCAPool(t, roles["trainer"])
	noCert := &tls.Config{RootCAs: pool, ServerName: tlsauth.NodeName, MinVersion: tls.VersionTLS13}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, "/healthz")
		if err == nil && code == 200 && strings.HasPrefix(body, "ok: ") {
			break
		}
		select {
		case <-exited:
			t.Fatalf("the trainer exited before its /healthz answered over HTTPS:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz over HTTPS with DDPM_HTTP_TLS=true: %d %q %v after a minute\n%s", code, body, err, log.String())
		}
	}
	if !strings.Contains(log.String(), `"msg":"`+MsgServingHTTP+`"`) || !strings.Contains(log.String(), `"https":true`) {
		t.Errorf("no %q line with https true:\n%s", MsgServingHTTP, log.String())
	}
}
