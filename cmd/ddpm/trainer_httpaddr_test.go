package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTrainerHTTPAddrInUse: a trainer whose --http-addr cannot be listened on (the port is
// taken) stops at once with status 2 and one line naming the address and what holds it (here
// this test's process), as it does for --listen.
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
	want := "trainer: cannot listen on --http-addr " + addr + ": the port is in use by pid " + strconv.Itoa(os.Getpid()) + " ("
	if !errors.As(err, &ee) || ee.code != 2 || !strings.HasPrefix(err.Error(), want) ||
		!strings.HasSuffix(err.Error(), "): stop that process, or give another --http-addr") {
		t.Fatalf("got %v, want exit 2 %q... naming this process", err, want)
	}
}
