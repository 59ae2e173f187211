package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"ddpm/internal/testutil"
)

// TestCoordinatorS25HTTPSPortHeldByConnection: --http-tls binds its port with the node's own
// coordinator.ListenFlag, so a port held only by a connection's local end is the line every
// replica port gets and exit 1 (restarted: it frees by itself), nothing written; a listening
// program there is exit 2 (TestCoordinatorS25HTTPTLSMistakes).
func TestCoordinatorS25HTTPSPortHeldByConnection(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs, _ := s25Certs(t, bin)
	httpAddr, remote := portHeldByConnection(t)
	raft, grpcAddr := freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "c0")
	pid := os.Getpid()
	runRefused(t, bin, 1, "ddpm: coordinator: --http-addr "+httpAddr+": the port is held for now by a connection of pid "+
		strconv.Itoa(pid)+" ("+procCommand(t, pid)+") to "+remote+
		", not a listening program: it is free once that ends; start the replica again\n",
		"coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpcAddr, "--peers", "c0="+raft+"="+grpcAddr,
		"--data-dir", dir, "--bootstrap", "--http-addr", httpAddr, "--http-tls", "--certs", certs)
	mustNotExist(t, dir)
}
