package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStatusNothingListens: ddpm status at an address where nothing listens (a port that was
// just closed) says so in one line within about a second, exit status 1; it retried for the
// whole --timeout (10 s) and then named a deadline. An address that accepts connections but
// does not answer is still waited for until --timeout, with the old line.
func TestStatusNothingListens(t *testing.T) {
	closed := freeAddr(t) // listened on, then closed: connections are refused
	t0 := time.Now()
	_, err := runCLI(t, context.Background(), nil, "status", "--coordinator", closed, "--insecure")
	took := time.Since(t0)
	args := []string{"status", "--coordinator", closed}
	wantExit(t, args, err, 1, "nothing listens at "+closed+" (connection refused): no coordinator runs there, or not yet (--coordinator takes a coordinator's --grpc-addr)")
	if took > 3*time.Second {
		t.Errorf("status at a closed port took %v, want about a second", took)
	}

	// One address silent (accepts, never answers), one closed: something may yet answer, so
	// status waits for --timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	addrs := closed + "," + silent.Addr().String()
	t0 = time.Now()
	_, err = runCLI(t, context.Background(), nil, "status", "--coordinator", addrs, "--insecure", "--timeout", "1500ms")
	took = time.Since(t0)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || took < 1500*time.Millisecond ||
		!strings.HasPrefix(err.Error(), "no coordinator answered at "+addrs+" within 1.5s") {
		t.Errorf("status at a silent port: %v after %v, want exit 1 'no coordinator answered at %s within 1.5s' after --timeout", err, took, addrs)
	}
}
