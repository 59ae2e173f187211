package coordinator

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestNotACoordinator: an address that answers gRPC but serves no coordinator (a real gRPC
// server on loopback with no services, as a trainer's ring port looks to this client) fails the
// call at once with ErrNotCoordinator naming the address, not "coordinator: unknown service
// ddpm.coordinator.v1.Coordinator" and not after retrying until the deadline.
func TestNotACoordinator(t *testing.T) {
	sec := tlsauthtest.Insecure(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(sec.ServerOptions()...)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()

	addr := ln.Addr().String()
	c, err := Dial([]string{addr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Status(ctx)
	if !errors.Is(err, ErrNotCoordinator) {
		t.Fatalf("Status of a gRPC server without the coordinator service: %v, want ErrNotCoordinator", err)
	}
	want := "coordinator: not a coordinator: " + addr +
		" answers but serves no coordinator (a trainer's --listen address? use the coordinators' --grpc-addr)"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: retried instead of failing at once", d)
	}
}
