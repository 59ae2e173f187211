package coordinator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"ddpm/api"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// startSecureNode runs one real coordinator node (raft + gRPC) with the material in certs;
// refusals are logged to the returned log.
func startSecureNode(t *testing.T, certs string) (*Node, *tlsauthtest.Log) {
	t.Helper()
	log := &tlsauthtest.Log{}
	addrs := freeAddrs(t, 2)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: tlsauthtest.Load(t, certs, log)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	return node, log
}

// statusWith calls Status on addr through a Client secured by sec, within 1.5 s.
func statusWith(t *testing.T, addr string, sec *tlsauth.Bundle) error {
	t.Helper()
	c, err := Dial([]string{addr}, sec, WithAttemptTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	_, err = c.Status(ctx)
	return err
}

// TestServiceRefusesOutsiders drives the real coordinator service with callers that must not
// get in: plain text, TLS without a client certificate, a certificate of another CA, and the
// right CA with the wrong join secret. Each is refused with an error naming the cause on the
// caller's side and a log line on the node's side; the cluster's own material gets in.
func TestServiceRefusesOutsiders(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	node, log := startSecureNode(t, certs)
	addr := node.cfg.GRPCAddr

	if err := statusWith(t, addr, tlsauthtest.Load(t, certs, nil)); err != nil {
		t.Fatalf("own certificate refused: %v", err)
	}

	err := statusWith(t, addr, tlsauthtest.Insecure(t))
	if !errors.Is(err, ErrNotCoordinator) { // at once: a TLS server is no coordinator for --insecure
		t.Fatalf("plain-text client: %v", err)
	}
	log.Wait(t, "tlsauth: refused connection", "first record does not look like a TLS handshake")

	// TLS that trusts the cluster's CA but offers no certificate of its own (a stock gRPC client,
	// without the wait for the server's verdict that tlsauth's dialer adds).
	pem, rerr := os.ReadFile(filepath.Join(certs, tlsauth.CAFile))
	if rerr != nil {
		t.Fatal(rerr)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: tlsauth.NodeName, MinVersion: tls.VersionTLS13})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = api.NewCoordinatorClient(cc).Status(ctx, &api.StatusRequest{})
	if status.Code(err) != codes.Unavailable { // a plain gRPC client may see the alert or a broken pipe
		t.Fatalf("client without certificate: %v", err)
	}
	log.Wait(t, "client didn't provide a certificate")

	err = statusWith(t, addr, tlsauthtest.Load(t, tlsauthtest.Dir(t), nil))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("client of another CA: %v", err)
	}
	// The outsider rejects our server certificate first and says so with an alert.
	log.Wait(t, "tlsauth: refused connection", "remote error: tls: bad certificate")

	err = statusWith(t, addr, tlsauthtest.Load(t, tlsauthtest.WrongSecret(t, certs), nil))
	if !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "wrong join secret") {
		t.Fatalf("client with the wrong join secret: %v", err)
	}
	log.Wait(t, "tlsauth: refused call", "Coordinator/Status", "wrong join secret")
}

// TestRaftRefusesOutsiders sends raft RPCs to a real node's raft port from transports holding
// another CA's certificate or the wrong join secret: both are refused before raft sees a byte,
// and the node logs why. The node's own material gets an answer.
func TestRaftRefusesOutsiders(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	node, log := startSecureNode(t, certs)
	target := raft.ServerAddress(node.cfg.RaftAddr)
	for !node.Replica.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}

	vote := func(sec *tlsauth.Bundle) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		trans := raft.NewNetworkTransport(sec.RaftStreamLayer(ln, nil), 1, time.Second, io.Discard)
		defer trans.Close()
		var resp raft.RequestVoteResponse
		return trans.RequestVote("n0", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("intruder"), Addr: []byte(ln.Addr().String())}, Term: 1}, &resp)
	}
	err := vote(tlsauthtest.Load(t, tlsauthtest.Dir(t), nil))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("raft peer of another CA: %v", err)
	}
	log.Wait(t, "tlsauth: refused raft connection", "remote error: tls: bad certificate")
	err = vote(tlsauthtest.Load(t, tlsauthtest.WrongSecret(t, certs), nil))
	if !errors.Is(err, tlsauth.ErrJoinSecret) {
		t.Fatalf("raft peer with the wrong join secret: %v", err)
	}
	log.Wait(t, "presented a wrong join secret")
	if node.Replica.Raft().State() != raft.Leader {
		t.Fatalf("node lost leadership to refused peers: %v", node.Replica.Raft().State())
	}
	if err := vote(tlsauthtest.Load(t, certs, nil)); err != nil {
		t.Fatalf("own material: %v", err)
	}
}

// TestServiceValidatesRequests sends malformed requests straight to a real node: each is refused
// with fsm.ErrBadCommand naming the field, and nothing reaches the log.
func TestServiceValidatesRequests(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	node, _ := startSecureNode(t, certs)
	c, err := Dial([]string{node.cfg.GRPCAddr}, tlsauthtest.Load(t, certs, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !node.Replica.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	// A new leader's first entries (the bootstrap configuration, its no-op) may still be on
	// their way to the state machine: count from after them (under -race the index moved 0 -> 2).
	if err := node.Replica.Raft().Barrier(10 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	before := node.Replica.AppliedIndex()
	sha := strings.Repeat("ab", 32)
	long := strings.Repeat("x", MaxIDLen+1)
	cases := []struct {
		call func() error
		want string
	}{
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "", Address: "10.0.0.1:1", Version: "v1"})
			return err
		}, "id is empty"},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: long, Address: "10.0.0.1:1", Version: "v1"})
			return err
		}, "id is 254 bytes, at most 253 allowed"},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "a\nb", Address: "10.0.0.1:1", Version: "v1"})
			return err
		}, `id "a\nb": byte 1 is not printable ASCII`},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1", Version: "v1"})
			return err
		}, `address "10.0.0.1" is not host:port`},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:70000", Version: "v1"})
			return err
		}, `address "10.0.0.1:70000": want a host and a port in 1..65535`},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v1", Held: []fsm.Held{{Step: -5, SHA256: sha}}})
			return err
		}, "held[0].step is -5, must not be negative"},
		{func() error {
			_, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v1", Held: []fsm.Held{{Step: 5, SHA256: "xyz"}}})
			return err
		}, "held[0].sha256 is 3 characters, want 64 hex digits"},
		{func() error {
			_, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Step: -1})
			return err
		}, "step is -1, must not be negative"},
		{func() error {
			_, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Step: 1, LossQuartiles: []float64{1, 2}})
			return err
		}, "loss_quartiles has 2 values, want 4 or none"},
		{func() error {
			_, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Step: 1, Loss: math.NaN()})
			return err
		}, "loss is NaN, want a finite number"},
		{func() error {
			_, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Step: 1, Loss: 0.5, GradNorm: math.Inf(1)})
			return err
		}, "grad_norm is +Inf, want a finite number"},
		{func() error {
			_, err := c.ReportProgress(ctx, &api.ReportProgressRequest{Id: "a", Step: 1, LossQuartiles: []float64{0.1, math.NaN(), 0.3, 0.4}})
			return err
		}, "loss_quartiles[1] is NaN, want a finite number"},
		{func() error {
			_, err := c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "a", Step: 1, Sha256: strings.ToUpper(sha), Size: 9})
			return err
		}, "is not lowercase hex"},
		{func() error {
			_, err := c.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "a", Step: 1, Sha256: sha, Size: 0})
			return err
		}, "size is 0 bytes, want 1..1099511627776"},
		{func() error {
			_, err := c.Heartbeat(ctx, "")
			return err
		}, "id is empty"},
		{func() error {
			_, err := c.Leave(ctx, "a b")
			return err
		}, `id "a b": byte 1 is not printable ASCII`},
		{func() error {
			return c.WatchAssignment(ctx, long, func(*api.Assignment) error { return nil })
		}, "id is 254 bytes"},
	}
	for i, tc := range cases {
		err := tc.call()
		if !errors.Is(err, fsm.ErrBadCommand) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("case %d: got %v, want ErrBadCommand with %q", i, err, tc.want)
		}
	}
	// A request above the receive limit is refused by the server's gRPC itself.
	raw, err := grpc.NewClient(node.cfg.GRPCAddr, tlsauthtest.Load(t, certs, nil).DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	huge := &api.SubmitRunRequest{RequestId: "r", RunYaml: make([]byte, MaxRequestBytes+1)}
	if _, err := api.NewCoordinatorClient(raw).SubmitRun(ctx, huge); status.Code(err) != codes.ResourceExhausted ||
		!strings.Contains(err.Error(), "received message larger than max") {
		t.Errorf("oversized request: %v", err)
	}
	if after := node.Replica.AppliedIndex(); after != before {
		t.Errorf("malformed requests reached the log: applied index %d -> %d", before, after)
	}
}
