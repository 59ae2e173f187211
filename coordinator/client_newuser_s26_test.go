package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestNewUserS26SecurityMismatchAtOnce: a Client with --insecure at a real replica serving mutual
// TLS, and one with --certs at a real replica run with --insecure, end their first call at once
// with a *NotCoordinatorError naming the address and the flag to give (they retried until the
// deadline, --timeout of ddpm status, and ended with "no coordinator answered", exit 1).
func TestNewUserS26SecurityMismatchAtOnce(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	secure := startS25Node(t, tlsauthtest.Load(t, certs, nil))
	plain := startS25Node(t, tlsauthtest.Insecure(t))
	for _, tc := range []struct {
		name, addr, want string
		insecure         bool
	}{
		{"insecure at TLS", secure.cfg.GRPCAddr, "coordinator: not a coordinator: " + secure.cfg.GRPCAddr +
			" serves gRPC over TLS (a coordinator started with --certs) and this process runs --insecure: " +
			"give --certs DIR, the certificates its cluster was started with (a ddpm local run's RUN/certs)", true},
		{"certs at plain text", plain.cfg.GRPCAddr, "coordinator: not a coordinator: " + plain.cfg.GRPCAddr +
			" serves gRPC in plain text (a coordinator or trainer started with --insecure) and this process uses --certs: " +
			"give --insecure instead of --certs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sec := tlsauthtest.Load(t, certs, nil)
			if tc.insecure {
				sec = tlsauthtest.Insecure(t)
			}
			c, err := Dial([]string{tc.addr}, sec)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			_, err = c.Status(ctx)
			var nc *NotCoordinatorError
			if !errors.As(err, &nc) || err.Error() != tc.want || nc.Addr != tc.addr {
				t.Fatalf("Status after %v: %v\nwant %q", time.Since(start).Round(time.Millisecond), err, tc.want)
			}
		})
	}
}
