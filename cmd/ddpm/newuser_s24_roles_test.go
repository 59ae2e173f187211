package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/checkpoint"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestNewUserS24RollbackRoleRefused: ddpm checkpoint rollback --yes with a trainer's
// certificate (ddpm certs issue --role trainer) against a real coordinator with a committed
// checkpoint is refused by the coordinator for the certificate's role: one line, exit status 2
// (the command line's --certs is to change), saying which certificate rolls back. It exited 1,
// the status of a cluster that failed, with the refusal alone (hunk of
// certs_permission_denied.patch, from "certs").
func TestNewUserS24RollbackRoleRefused(t *testing.T) {
	addr, cli, gen := startMonitoredNode(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "trainer-a", Generation: gen, Step: 10, Sha256: strings.Repeat("ab", 32), Size: 10}); err != nil {
		t.Fatal(err)
	}
	trainerCerts := tlsauthtest.Issue(t, monitorCerts, tlsauth.RoleTrainer)
	nuWant(t, 2, "ddpm: checkpoint rollback: coordinator: permission denied: role trainer may not call /ddpm.coordinator.v1.Coordinator/RollbackRun (roles allowed: coordinator, operator) (--certs "+
		trainerCerts+": roll back with an operator's certificate, ddpm certs issue --role operator)",
		"checkpoint", "rollback", "--coordinator", addr, "--certs", trainerCerts, "--to-step", "0", "--yes")
}

// TestNewUserS24FetchRoleRefused: ddpm checkpoint fetch with a coordinator's certificate from
// a TLS checkpoint server of the same cluster is the server's refusal for that role, in one
// line, exit status 2, nothing written. It was "checkpoint: fetch step 50 from ADDR: checkpoint
// transfer failed: rpc error: code = PermissionDenied desc = ...", exit 1 (hunk of
// certs_permission_denied.patch).
func TestNewUserS24FetchRoleRefused(t *testing.T) {
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "tls.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := tlsauthtest.Dir(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tlsauthtest.Load(t, dir, nil).ServerOptions()...)
	checkpoint.RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	coord := tlsauthtest.Issue(t, dir, tlsauth.RoleCoordinator)
	out := filepath.Join(t.TempDir(), "copy.db")
	nuWant(t, 2, "ddpm: checkpoint fetch: the trainer at "+lis.Addr().String()+" refused --certs "+coord+
		": role coordinator may not call /ddpm.checkpoint.v1.CheckpointTransfer/Fetch (roles allowed: trainer, operator)",
		"checkpoint", "fetch", lis.Addr().String(), "--step", "50", "--out", out, "--certs", coord)
	mustNotExist(t, out)
}

// TestNewUserS24FetchFromNonTrainer: ddpm checkpoint fetch from a TLS checkpoint server whose
// certificate is a coordinator's (the address of a coordinator given for a trainer's) says that
// the address is no trainer, exit status 2, nothing written; this process refused the server
// and sent it nothing, but the line said "the trainer at ADDR refused --certs DIR: ..."
// (certs_fetch_server_role.patch, from "certs").
func TestNewUserS24FetchFromNonTrainer(t *testing.T) {
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "tls.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir := tlsauthtest.Dir(t)
	coord := tlsauthtest.Issue(t, dir, tlsauth.RoleCoordinator)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tlsauthtest.Load(t, coord, nil).ServerOptions()...)
	checkpoint.RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	out := filepath.Join(t.TempDir(), "copy.db")
	nuWant(t, 2, "ddpm: checkpoint fetch: "+lis.Addr().String()+" is not a trainer: its certificate has role coordinator, and /ddpm.checkpoint.v1.CheckpointTransfer/Fetch is served by role trainer",
		"checkpoint", "fetch", lis.Addr().String(), "--step", "50", "--out", out, "--certs", dir)
	mustNotExist(t, out)
}
