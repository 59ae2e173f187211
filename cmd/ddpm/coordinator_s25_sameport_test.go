package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestCoordinatorS25SamePortTwice: a replica given one port for two of --raft-addr, --grpc-addr
// and --http-addr (a wildcard host included) is refused before it binds anything or makes
// --data-dir, naming both flags, status 2. It failed on its own second bind with "cannot listen on
// --grpc-addr ...: the port is in use by pid <itself> ...: stop that process, or give this replica
// other ports in every replica's --peers".
func TestCoordinatorS25SamePortTwice(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	raft, grpc := freeAddr(t), freeAddr(t)
	_, grpcPort, err := net.SplitHostPort(grpc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name             string
		raftA, grpcA, ht string
		tls              bool
		want             string
	}{
		{"http=grpc", raft, grpc, grpc, false, "--grpc-addr " + grpc + " and --http-addr " + grpc},
		{"http=grpc tls", raft, grpc, grpc, true, "--grpc-addr " + grpc + " and --http-addr " + grpc},
		{"http=raft tls", raft, grpc, raft, true, "--raft-addr " + raft + " and --http-addr " + raft},
		{"http wildcard", raft, grpc, ":" + grpcPort, false, "--grpc-addr " + grpc + " and --http-addr :" + grpcPort},
		{"raft=grpc", grpc, grpc, "", false, "--raft-addr " + grpc + " and --grpc-addr " + grpc},
	} {
		dataDir := filepath.Join(t.TempDir(), "c0")
		args := []string{"coordinator", "--id", "c0", "--raft-addr", tc.raftA, "--grpc-addr", tc.grpcA,
			"--peers", "c0=" + tc.raftA + "=" + tc.grpcA, "--data-dir", dataDir, "--bootstrap", "--preset", "mnist", "--certs", certs}
		if tc.ht != "" {
			args = append(args, "--http-addr", tc.ht)
		}
		if tc.tls {
			args = append(args, "--http-tls")
		}
		out, errOut, code := ddpmRun(t, bin, args...)
		want := "ddpm: coordinator: " + tc.want + " name one port: give each its own port\n"
		if code != 2 || out != "" || errOut != want {
			t.Errorf("%s: status %d, stdout %q, stderr %q\nwant status 2 and %q", tc.name, code, out, errOut, want)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%s: --data-dir %s was made (%v)", tc.name, dataDir, err)
		}
	}
}

// TestTrainerS25SamePortTwice: a cluster trainer given one port for --listen and --http-addr is
// refused before it binds, asks the coordinators or makes --data-dir, naming both flags, status
// 2. It failed on its own second bind, naming itself as the port's holder.
func TestTrainerS25SamePortTwice(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	_, cfg := procRun(t, dir, 12, 1, 1, 2*time.Second, nil)
	listen := freeAddr(t)
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatal(err)
	}
	for _, httpAddr := range []string{listen, "0.0.0.0:" + port} {
		vol := filepath.Join(dir, "t0")
		out, errOut, code := ddpmRun(t, bin, "trainer", "--id", "t0", "--coordinator", freeAddr(t), "--listen", listen,
			"--http-addr", httpAddr, "--data-dir", vol, "--config", cfg, "--certs", tlsauthtest.Dir(t))
		want := "ddpm: trainer: --listen " + listen + " and --http-addr " + httpAddr + " name one port: give each its own port\n"
		if code != 2 || out != "" || errOut != want {
			t.Errorf("--http-addr %s: status %d, stdout %q, stderr %q\nwant status 2 and %q", httpAddr, code, out, errOut, want)
		}
		if _, err := os.Stat(vol); !os.IsNotExist(err) {
			t.Errorf("--http-addr %s: --data-dir %s was made (%v)", httpAddr, vol, err)
		}
	}
}
