package main

import (
	"net"
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerS26BadHTTPAddrExit2: a `ddpm trainer` process given an --http-addr that is no
// host:port address exits 2 with one line naming the flag and the value, with or without
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
		{"bad:addr:x", "not a host:port address (too many colons in address)"},
		{"127.0.0.1:99999", `port "99999" is not a number in 1..65535`},
		{"127.0.0.1", "not a host:port address (missing port in address)"},
	} {
		for _, tls := range []bool{false, true} {
			args := []string{"trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", busy.Addr().String(), "--http-addr", tc.addr,
				"--data-dir", vol, "--certs", certs}
			if tls {
				args = append(args, "--http-tls")
			}
			runRefused(t, bin, 2, "ddpm: --http-addr "+tc.addr+": "+tc.why+"\n", args...)
			mustNotExist(t, vol)
		}
	}
}
