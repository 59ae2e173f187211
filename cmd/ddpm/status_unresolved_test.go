package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestMonitorHostNotFound: status, loss and checkpoint rollback given a --coordinator whose host
// name does not resolve (.invalid never does, RFC 6761) say so in one line within about a
// second, exit status 1; they retried for the whole --timeout (10 s) and then printed a
// deadline with gRPC's "name resolver error: produced zero addresses". With a closed port
// beside it the line names both. An unresolvable name beside a port that accepts but does not
// answer is still waited for until --timeout, since a coordinator may answer there.
func TestMonitorHostNotFound(t *testing.T) {
	const bad = "no-such-host.invalid:7001"
	if _, err := net.DefaultResolver.LookupHost(context.Background(), "no-such-host.invalid"); err == nil {
		t.Skip("this machine's resolver answers for no-such-host.invalid")
	}
	closed := freeAddr(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--coordinator", bad, "--insecure"},
			"no coordinator at " + bad + " (no such host): --coordinator takes a coordinator's --grpc-addr, host:port"},
		{[]string{"loss", "--coordinator", bad, "--insecure"},
			"no coordinator at " + bad + " (no such host): --coordinator takes a coordinator's --grpc-addr, host:port"},
		{[]string{"checkpoint", "rollback", "--coordinator", bad, "--to-step", "0", "--insecure"},
			"no coordinator at " + bad + " (no such host): --coordinator takes a coordinator's --grpc-addr, host:port"},
		{[]string{"status", "--coordinator", closed + "," + bad, "--insecure"},
			"no coordinator at " + closed + " (connection refused), " + bad + " (no such host): --coordinator takes a coordinator's --grpc-addr, host:port"},
	} {
		t0 := time.Now()
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		took := time.Since(t0)
		wantExit(t, tc.args, err, 1, tc.want)
		if took > 3*time.Second {
			t.Errorf("ddpm %s took %v, want about a second", strings.Join(tc.args, " "), took)
		}
	}

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
	addrs := bad + "," + silent.Addr().String()
	t0 := time.Now()
	_, err = runCLI(t, context.Background(), nil, "status", "--coordinator", addrs, "--insecure", "--timeout", "1500ms")
	took := time.Since(t0)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || took < 1500*time.Millisecond ||
		!strings.HasPrefix(err.Error(), "no coordinator answered at "+addrs+" within 1.5s") {
		t.Errorf("status beside a silent port: %v after %v, want exit 1 'no coordinator answered at %s within 1.5s' after --timeout", err, took, addrs)
	}
}
