package main

import (
	"context"
	"net"
	"path/filepath"
	"testing"
)

// TestCheckpointFetchNoTrainer: ddpm checkpoint fetch from an address where nothing listens, or
// whose host name does not resolve, says which in one line, exit 1, and writes nothing; it
// printed gRPC's "rpc error: code = Unavailable desc = name resolver error: produced zero
// addresses" or "connection error: desc = \\"transport: Error while dialing: ...\\"".
func TestCheckpointFetchNoTrainer(t *testing.T) {
	closed := freeAddr(t)
	cases := []struct{ addr, why string }{{closed, "connection refused"}}
	if _, err := net.DefaultResolver.LookupHost(context.Background(), "no-such-host.invalid"); err != nil {
		cases = append(cases, struct{ addr, why string }{"no-such-host.invalid:7100", "no such host"})
	}
	dir := t.TempDir()
	for _, c := range cases {
		out := filepath.Join(dir, "copy.db")
		args := []string{"checkpoint", "fetch", c.addr, "--step", "50", "--out", out, "--insecure"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 1, "checkpoint fetch: no trainer at "+c.addr+" ("+c.why+"): give a running trainer's --listen address (ddpm status lists them)")
		mustNotExist(t, out)
	}
}
