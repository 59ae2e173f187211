package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestTrainerPortHeldByConnectionRestartable: a --listen port held only by the local end of a
// connection (what a trainer restarted by ddpm local meets when another process's outgoing
// connection took its recorded port while it was down) exits 1, which ddpm local restarts, with
// a line naming the connection; a listening program keeps exit 2 (TestApplyS24TrainerListenInUse).
// Since 39b0ff3 both exited 2, which ddpm local takes as final: the whole run ended (review T5).
func TestTrainerPortHeldByConnectionRestartable(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	addr, remote := portHeldByConnection(t)
	vol := filepath.Join(t.TempDir(), "vol")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--preset", "mnist", "--coordinator", closedAddr(t),
		"--data-dir", vol, "--insecure", "--listen", addr)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	want := "ddpm: trainer: --listen " + addr + ": the port is held for now by a connection of pid " + strconv.Itoa(os.Getpid()) +
		" (" + procCommand(t, os.Getpid()) + ") to " + remote +
		", not a listening program: it is free once that ends; start the trainer again\n"
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || stderr.String() != want {
		t.Fatalf("trainer with --listen %s held by a connection: %v, stderr %q\nwant exit status 1, stderr %q", addr, err, stderr.String(), want)
	}
	if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("trainer refused for --listen left --data-dir %s (%v)", vol, err)
	}
}

// portHeldByConnection opens a loopback connection from this process that stays open until the
// test ends and returns its local address (a port held only by the connection's local end, not
// listened on) and its remote one.
func portHeldByConnection(t *testing.T) (local, remote string) {
	t.Helper()
	peer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	go func() {
		for {
			c, err := peer.Accept()
			if err != nil {
				return
			}
			defer c.Close() // until the listener closes at the test's end
		}
	}()
	conn, err := net.Dial("tcp", peer.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String(), peer.Addr().String()
}
