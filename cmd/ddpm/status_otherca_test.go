package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestStatusOtherCA: status, loss and checkpoint rollback against a live TLS coordinator with
// --certs of another cluster (another CA: a second run's RUN/certs) say so at the first failed
// handshake, in the line checkpoint fetch gives for a trainer, exit status 2. They waited the
// whole --timeout (10 s) and then printed gRPC's "no coordinator answered at ADDR within 10s:
// ... transport: authentication handshake failed: tls: failed to verify certificate: x509:
// certificate signed by unknown authority ..." in one 400-character line, exit 1.
func TestStatusOtherCA(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startReplica(t, run, "test", tlsauthtest.Dir(t))
	other := tlsauthtest.Dir(t)
	want := func(name string) string {
		return fmt.Sprintf("%s: the coordinator at %s and --certs %s are of different CAs (the certificates of another run?): give --certs the directory of its cluster's certificates (a ddpm local run's RUN/certs)", name, addr, other)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"status", []string{"status", "--coordinator", addr}},
		{"loss", []string{"loss", "--coordinator", addr}},
		{"checkpoint rollback", []string{"checkpoint", "rollback", "--coordinator", addr, "--to-step", "0"}},
	} {
		args := append(tc.args, "--certs", other, "--timeout", "10s")
		start := time.Now()
		_, err := runCLI(t, context.Background(), nil, args...)
		took := time.Since(start)
		wantExit(t, args, err, 2, want(tc.name))
		// One handshake: well under --timeout even on a loaded machine.
		if took > 3*time.Second {
			t.Errorf("ddpm %v took %v, want the refusal at the first handshake (--timeout 10s)", args, took.Round(time.Millisecond))
		}
	}
}
