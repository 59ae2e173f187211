package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"ddpm/internal/testutil"
)

// TestCoordinatorPortHeldByConnectionRestartable: a replica's --grpc-addr port held only by the
// local end of a connection (another process's outgoing connection took a restarted replica's
// recorded port while it was down) exits 1, which ddpm local and Kubernetes restart, naming the
// connection, with nothing written; a listening program keeps exit 2
// (TestOperatorS24CoordinatorStartMistakes). It exited 2, which ddpm local takes as final.
func TestCoordinatorPortHeldByConnectionRestartable(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	grpc0, remote := portHeldByConnection(t)
	raft0 := freeAddr(t)
	dir := filepath.Join(t.TempDir(), "c0")
	pid := os.Getpid()
	runRefused(t, bin, 1, "ddpm: coordinator: --grpc-addr "+grpc0+": the port is held for now by a connection of pid "+
		strconv.Itoa(pid)+" ("+procCommand(t, pid)+") to "+remote+
		", not a listening program: it is free once that ends; start the replica again\n",
		"coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0, "--peers", "c0="+raft0+"="+grpc0,
		"--data-dir", dir, "--bootstrap", "--insecure")
	mustNotExist(t, dir)
}
