package main

import (
	"net"
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
)

// TestTrainerS26ListenWording: a `ddpm trainer` process whose --listen names an IP of no
// interface of this machine (192.0.2.1, TEST-NET-1) exits 2 with the replicas' line for it
// (coordinator.ListenFlag's wording: "cannot listen on FLAG ADDR: no network interface of this
// machine has that IP: give one of its addresses"), leaving no --data-dir. It exited 1 with
// net.Listen's "bind: cannot assign requested address", in its own wording.
func TestTrainerS26ListenWording(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	vol := filepath.Join(t.TempDir(), "vol")
	addr := "192.0.2.1:" + portOfS26(t, freeAddr(t))
	runRefused(t, bin, 2, "ddpm: trainer: cannot listen on --listen "+addr+": no network interface of this machine has that IP: give one of its addresses\n",
		"trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", addr, "--data-dir", vol, "--insecure")
	mustNotExist(t, vol)
}

// portOfS26 is addr's port.
func portOfS26(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
