package coordinator

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// startS25Node runs a real one-replica node with an HTTP port, secured by sec, and waits until
// it leads (its /api/status then names the leader's gRPC address).
func startS25Node(t *testing.T, sec *tlsauth.Bundle) *Node {
	t.Helper()
	addrs := freeAddrs(t, 3)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, HTTPAddr: addrs[2], Peers: []Peer{p},
		DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for node.Replica.Leader().ID != "n0" {
		if time.Now().After(deadline) {
			t.Fatal("the node did not lead within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return node
}

// TestCLIS25IdentifyPort: IdentifyPort against the ports of real nodes, secure and plain text,
// and a plain-text server of another kind. The raft port of a secure node is known by the TLS
// protocol its raft layer picks (so RaftProtocol agrees with tlsauth's), the HTTP port by its
// HTTP/1.1 answer and /api/status; gRPC ports, and a plain-text raft port (it closes at any
// first bytes, as a proxy to a starting coordinator may), get "". A Client whose only address
// is such a port fails its first call at once with a *NotCoordinatorError; listed before a
// real replica, the port is passed over.
func TestCLIS25IdentifyPort(t *testing.T) {
	ctx := context.Background()
	secureLog := &tlsauthtest.Log{}
	secureCerts := tlsauthtest.Dir(t)
	secure := startS25Node(t, tlsauthtest.Load(t, secureCerts, secureLog))
	plainSec := tlsauthtest.Insecure(t)
	plain := startS25Node(t, plainSec)

	banner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer banner.Close()
	go func() {
		for {
			c, err := banner.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
			c.Close()
		}
	}()

	// An HTTP server that is no coordinator's (a trainer's serves /metrics, /healthz, /readyz).
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	otherSrv := &http.Server{Handler: http.NotFoundHandler()}
	go otherSrv.Serve(other)
	defer otherSrv.Close()

	// Probed with this cluster's certificates, its gRPC port sees a handshake it accepts: no
	// refusal in its log.
	if what, grpc := IdentifyPort(ctx, secure.cfg.GRPCAddr, tlsauthtest.Load(t, secureCerts, nil)); what != "" || grpc != "" {
		t.Errorf("IdentifyPort(%s) with the cluster's certificates = %q, %q; want nothing", secure.cfg.GRPCAddr, what, grpc)
	}
	time.Sleep(200 * time.Millisecond) // a refusal is logged as the server's handshake ends
	if l := secureLog.String(); strings.Contains(l, "refused") {
		t.Errorf("the probe of the gRPC port was refused:\n%s", l)
	}

	for _, tc := range []struct{ addr, what, grpc string }{
		{other.Addr().String(), other.Addr().String() + " is an HTTP port (it answered HTTP/1.1), not a gRPC port (a ddpm coordinator's or trainer's --http-addr?)", ""},
		{secure.cfg.RaftAddr, secure.cfg.RaftAddr + " is the raft port (--raft-addr) of a ddpm coordinator (its TLS offers raft's protocol ddpm-raft/1, not gRPC's)", ""},
		{secure.cfg.HTTPAddr, secure.cfg.HTTPAddr + " is the HTTP port (--http-addr) of ddpm coordinator n0 (it answered HTTP/1.1), not its gRPC port", secure.cfg.GRPCAddr},
		{secure.cfg.GRPCAddr, "", ""},
		{plain.cfg.HTTPAddr, plain.cfg.HTTPAddr + " is the HTTP port (--http-addr) of ddpm coordinator n0 (it answered HTTP/1.1), not its gRPC port", plain.cfg.GRPCAddr},
		{plain.cfg.GRPCAddr, "", ""},
		{plain.cfg.RaftAddr, "", ""},
		{banner.Addr().String(), banner.Addr().String() + ` answers in plain text, not gRPC (it sent "SSH-2.0-OpenSSH_9.2p1 Debian-2")`, ""},
	} {
		what, grpc := IdentifyPort(ctx, tc.addr, nil)
		if what != tc.what || grpc != tc.grpc {
			t.Errorf("IdentifyPort(%s) = %q, %q\nwant %q, %q", tc.addr, what, grpc, tc.what, tc.grpc)
		}
	}

	c, err := Dial([]string{plain.cfg.HTTPAddr}, plainSec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Status(cctx)
	var nc *NotCoordinatorError
	want := "coordinator: not a coordinator: " + plain.cfg.HTTPAddr + " is the HTTP port (--http-addr) of ddpm coordinator n0 (it answered HTTP/1.1), not its gRPC port: " +
		"--coordinator takes a coordinator's --grpc-addr, e.g. " + plain.cfg.GRPCAddr + " (the leader's)"
	if !errors.As(err, &nc) || !errors.Is(err, ErrNotCoordinator) || err.Error() != want || nc.Addr != plain.cfg.HTTPAddr {
		t.Fatalf("Status at the HTTP port: %v\nwant %q", err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Status at the HTTP port took %v: retried instead of failing at once", d)
	}

	both, err := Dial([]string{plain.cfg.HTTPAddr, plain.cfg.GRPCAddr}, plainSec)
	if err != nil {
		t.Fatal(err)
	}
	defer both.Close()
	if resp, err := both.Status(cctx); err != nil || resp.ReplicaId != "n0" {
		t.Fatalf("Status at the HTTP port, then the gRPC port: %v, %v; want n0's answer", resp, err)
	}
}
