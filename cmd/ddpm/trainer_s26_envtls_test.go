package main

import (
	"path/filepath"
	"strings"
	"testing"

	"ddpm/internal/testutil"
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
	log, _ := startHTTPSTrainer(t, bin, roles["trainer"], httpAddr, filepath.Join(t.TempDir(), "t0"))
	if !strings.Contains(log.String(), `"msg":"`+MsgServingHTTP+`"`) || !strings.Contains(log.String(), `"https":true`) {
		t.Errorf("no %q line with https true:\n%s", MsgServingHTTP, log.String())
	}
}
