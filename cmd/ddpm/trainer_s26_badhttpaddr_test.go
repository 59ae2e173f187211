package main

import (
	"net"
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerS26BadHTTPAddrExit2: a `ddpm trainer` process given an --http-addr that is no
// host:port address by the replicas' rule (coordinator.ListenAddrProblem: 999.1.1.1 is no IP
// either) exits 2 with one line naming the flag and the value, with or without
// --http-tls, before anything binds (its --listen port is held by this test, a refusal of its
// own if it were bound first) and without making --data-dir. It exited 1 with net.Listen's
// error after binding --listen.
func TestTrainerS26BadHTTPAddrExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	vol := filepath.Join(t.TempDir(), "vol")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ addr, why string }{
		{"bad:addr:x", "too many colons in address"},
		{"127.0.0.1:99999", "invalid port"},
		{"127.0.0.1", "missing port in address"},
		{"999.1.1.1:80", "not an IP: 999.1.1.1"},
	} {
		for _, tls := range []bool{false, true} {
			args := []string{"trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", busy.Addr().String(), "--http-addr", tc.addr,
				"--data-dir", vol, "--certs", certs}
			if tls {
				args = append(args, "--http-tls")
			}
			runRefused(t, bin, 2, "ddpm: trainer: --http-addr "+tc.addr+": not a host:port address ("+tc.why+")\n", args...)
			mustNotExist(t, vol)
		}
	}
}
