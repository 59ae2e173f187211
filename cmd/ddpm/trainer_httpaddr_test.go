package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTrainerHTTPAddrInUse: a trainer whose --http-addr cannot be listened on (the port is
// taken) stops at once with status 1 and one line naming the address, as it does for --listen.
// The error was dropped (ListenAndServe in a goroutine): the trainer ran on without /healthz,
// /readyz and /metrics, so its probes failed and Kubernetes restarted it with nothing in its
// log saying why.
func TestTrainerHTTPAddrInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	cmd := newTrainerCmd()
	cmd.SetArgs([]string{"--preset", "mnist", "--coordinator", closedAddr(t), "--listen", closedAddr(t),
		"--http-addr", addr, "--data-dir", t.TempDir(), "--insecure"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = cmd.ExecuteContext(ctx)
	if ctx.Err() != nil {
		t.Fatalf("the trainer still ran 20 s after --http-addr %s failed to listen (returned %v)", addr, err)
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), "--http-addr "+addr) ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("got %v, want exit 1 naming --http-addr %s in use", err, addr)
	}
}
