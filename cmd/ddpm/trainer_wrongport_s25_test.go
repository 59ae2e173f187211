package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerS25NoConfigWrongPortExit2: a cluster trainer given no --config (so it asks the
// coordinators for the run config) and a coordinator's --http-addr as --coordinator stops at
// the first contact with the one line `ddpm status` gives for that port and status 2, a command
// line to change; it exited 1 (a failure that ddpm local and Kubernetes restart onto the same
// address) with "no run config: asking the coordinators ...".
func TestTrainerS25NoConfigWrongPortExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	_, grpc0, http0 := startLeadingReplica(t, bin, certs, "c0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t0", "--coordinator", http0, "--listen", freeAddr(t),
		"--data-dir", filepath.Join(t.TempDir(), "t0"), "--certs", certs)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	want := "ddpm: " + http0 + " is the HTTP port (--http-addr) of ddpm coordinator c0 (it answered HTTP/1.1), not its gRPC port: " +
		"--coordinator takes a coordinator's --grpc-addr, e.g. " + grpc0 + " (the leader's)\n"
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
		t.Fatalf("trainer without --config at the HTTP port: %v, stderr %q\nwant exit status 2 and stderr %q", err, stderr.String(), want)
	}
}
