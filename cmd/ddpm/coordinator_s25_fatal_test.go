package main

import (
	"fmt"
	"testing"

	"ddpm/coordinator"
)

// TestCoordinatorS25FatalStatus: a replica whose gRPC server stopped serving (Node.Fatal,
// coordinator.ErrGRPCStopped) exits 1, which ddpm local and Kubernetes restart (a new process
// binds the port again), like a store that refused a write; the mistakes of the command exit 2.
func TestCoordinatorS25FatalStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("coordinator: %w on --grpc-addr 127.0.0.1:9: accept: socket gone", coordinator.ErrGRPCStopped), 1},
		{fmt.Errorf("x: %w", coordinator.ErrStoreWrite), 1},
		{&coordinator.RunConflictError{Where: "the cluster"}, 2},
	} {
		if got := fatalStatus(c.err); got != c.want {
			t.Errorf("fatalStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
