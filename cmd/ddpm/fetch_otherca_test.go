package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"ddpm/checkpoint"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestCheckpointFetchOtherCA: checkpoint fetch from a TLS trainer with --certs of another
// cluster (another CA: a second run's RUN/certs) is one line naming the address and the
// directory, exit status 2, and nothing is written. It was gRPC's "rpc error: code =
// Unavailable desc = connection error: desc = \"transport: authentication handshake failed:
// tls: failed to verify certificate: x509: certificate signed by unknown authority ...\"",
// exit 1. With the cluster's CA and another join secret the line is the trainer's refusal (it
// was "checkpoint: fetch step 50 from ADDR: checkpoint transfer failed: rpc error: code =
// Unauthenticated desc = ddpm: wrong join secret: ...", exit 1).
func TestCheckpointFetchOtherCA(t *testing.T) {
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "tls.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := tlsauthtest.Dir(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tlsauthtest.Load(t, dir, nil).ServerOptions()...)
	checkpoint.RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	other := tlsauthtest.Dir(t)
	out := filepath.Join(t.TempDir(), "copy.db")
	args := []string{"checkpoint", "fetch", lis.Addr().String(), "--step", "50", "--out", out, "--certs", other}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: the trainer at %s and --certs %s are of different CAs (the certificates of another run?): give --certs the directory of its cluster's certificates (a ddpm local run's RUN/certs)", lis.Addr(), other))
	mustNotExist(t, out)

	// The cluster's CA with another join secret: the trainer's refusal, in one line.
	wrong := tlsauthtest.WrongSecret(t, dir)
	args = []string{"checkpoint", "fetch", lis.Addr().String(), "--step", "50", "--out", out, "--certs", wrong}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: the trainer at %s refused --certs %s: wrong join secret: the caller belongs to another cluster (compare the join-secret files of both --certs directories)", lis.Addr(), wrong))
	mustNotExist(t, out)
}
