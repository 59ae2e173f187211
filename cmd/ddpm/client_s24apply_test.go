package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestApplyS24StatusWrongCoordinatorPort: `ddpm status --coordinator A --certs DIR` with A a
// real coordinator's --http-addr, or its --raft-addr, instead of its --grpc-addr: one line,
// status 1, whose hint says which port --coordinator takes. Given the --http-addr it blamed
// --insecure on the coordinator (wrong: it runs with --certs); given the --raft-addr it printed
// only gRPC's "tls: no application protocol".
func TestApplyS24StatusWrongCoordinatorPort(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	raft0, grpc0, http0 := freeAddr(t), freeAddr(t), freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0,
		"--http-addr", http0, "--peers", "c0="+raft0+"="+grpc0, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--certs", certs)
	for _, tc := range []struct{ addr, hint string }{
		{http0, "the address answers in plain text: a coordinator run with --insecure while this process uses --certs, or not a coordinator's --grpc-addr (its --http-addr?)"},
		{raft0, "the address speaks TLS but not gRPC: a coordinator's --raft-addr? --coordinator takes its --grpc-addr"},
	} {
		out, errOut, code := ddpmRun(t, bin, "status", "--coordinator", tc.addr, "--certs", certs, "--timeout", "2s")
		prefix := "ddpm: no coordinator answered at " + tc.addr + " within 2s: " + tc.hint + " ("
		if code != 1 || out != "" || !strings.HasPrefix(errOut, prefix) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("ddpm status --coordinator %s: status %d, stdout %q, stderr %q\nwant status 1 and one line beginning %q", tc.addr, code, out, errOut, prefix)
		}
	}
}
