package tlsauth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ddpm/api"
)

// issue makes a certificate directory of role r from the CA of dir (Issue) under t.TempDir.
func issue(t *testing.T, dir string, r Role) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), string(r))
	if _, err := Issue(dir, out, IssueOptions{Role: r}); err != nil {
		t.Fatal(err)
	}
	return out
}

// stubCoordinator answers the Coordinator calls the role tests make; the interceptors of
// ServerOptions decide whether a call reaches it.
type stubCoordinator struct {
	api.UnimplementedCoordinatorServer
}

func (stubCoordinator) Join(context.Context, *api.JoinRequest) (*api.JoinResponse, error) {
	return &api.JoinResponse{Generation: 7}, nil
}

func (stubCoordinator) Status(context.Context, *api.StatusRequest) (*api.StatusResponse, error) {
	return &api.StatusResponse{}, nil
}

func (stubCoordinator) RollbackRun(context.Context, *api.RollbackRunRequest) (*api.RollbackRunResponse, error) {
	return &api.RollbackRunResponse{}, nil
}

func (stubCoordinator) SubmitRun(context.Context, *api.SubmitRunRequest) (*api.SubmitRunResponse, error) {
	return &api.SubmitRunResponse{ConfigHash: "h"}, nil
}

func (stubCoordinator) WatchAssignment(_ *api.WatchAssignmentRequest, s grpc.ServerStreamingServer[api.Assignment]) error {
	return s.Send(&api.Assignment{Generation: 7})
}

// stubTrainer answers the calls a trainer serves (the ring and checkpoint transfer) with one
// message each.
type stubTrainer struct {
	api.UnimplementedRingServer
	api.UnimplementedCheckpointTransferServer
}

func (stubTrainer) Stream(s grpc.BidiStreamingServer[api.Frame, api.Signal]) error {
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.Send(&api.Signal{})
}

func (stubTrainer) Fetch(_ *api.CheckpointFetchRequest, s grpc.ServerStreamingServer[api.CheckpointFetchResponse]) error {
	return s.Send(&api.CheckpointFetchResponse{})
}

// coordinatorServer serves stubCoordinator (and stubTrainer's services, as one server may in a
// test) over real gRPC on loopback with b's options.
func coordinatorServer(t *testing.T, b *Bundle) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(b.ServerOptions()...)
	api.RegisterCoordinatorServer(srv, stubCoordinator{})
	api.RegisterRingServer(srv, stubTrainer{})
	api.RegisterCheckpointTransferServer(srv, stubTrainer{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// coordCalls makes each call the role tests check and returns each one's error by method name:
// the Coordinator's Join, Status, RollbackRun, SubmitRun and the stream WatchAssignment (its
// first message read), the trainers' Ring.Stream (one frame sent, one signal read) and
// CheckpointTransfer.Fetch (its first message read).
func coordCalls(t *testing.T, addr string, opts ...grpc.DialOption) map[string]error {
	t.Helper()
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := api.NewCoordinatorClient(cc)
	errs := map[string]error{}
	_, errs["Join"] = c.Join(ctx, &api.JoinRequest{Id: "t0"})
	_, errs["Status"] = c.Status(ctx, &api.StatusRequest{})
	_, errs["RollbackRun"] = c.RollbackRun(ctx, &api.RollbackRunRequest{ToStep: 100})
	_, errs["SubmitRun"] = c.SubmitRun(ctx, &api.SubmitRunRequest{})
	w, err := c.WatchAssignment(ctx, &api.WatchAssignmentRequest{Id: "t0"})
	if err == nil {
		_, err = w.Recv()
	}
	errs["WatchAssignment"] = err
	rs, err := api.NewRingClient(cc).Stream(ctx)
	if err == nil {
		if err = rs.Send(&api.Frame{}); err == nil {
			_, err = rs.Recv()
		}
	}
	errs["Ring.Stream"] = err
	fs, err := api.NewCheckpointTransferClient(cc).Fetch(ctx, &api.CheckpointFetchRequest{Step: 100})
	if err == nil {
		_, err = fs.Recv()
	}
	errs["CheckpointTransfer.Fetch"] = err
	return errs
}

// TestIssueRoleCertificates issues a trainer directory from a certs init directory: the CA
// certificate and join secret are copied, ca.key is not, node.crt carries the URI
// ddpm:role/trainer and expires with the CA, and the directory loads with Role trainer. Issuing
// again into it, from a directory without ca.key, with an unknown role or past the CA's expiry is
// refused naming the problem, and nothing is written.
func TestIssueRoleCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	if _, err := Init(dir, InitOptions{Days: 30, Now: now}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "trainer")
	paths, err := Issue(dir, out, IssueOptions{Role: RoleTrainer, Hosts: []string{"trainer-0.ddpm.default.svc"}, Now: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(out, CAFile), filepath.Join(out, CertFile), filepath.Join(out, KeyFile), filepath.Join(out, SecretFile)}
	if !slices.Equal(paths, want) {
		t.Fatalf("wrote %q, want %q", paths, want)
	}
	for _, n := range []string{CAFile, SecretFile} {
		a, _ := os.ReadFile(filepath.Join(dir, n))
		b, _ := os.ReadFile(filepath.Join(out, n))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs from the source directory's", n)
		}
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", p, fi.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, CAKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("ca.key in the issued directory: %v", err)
	}
	cert := readCert(t, filepath.Join(out, CertFile))
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "ddpm:role/trainer" {
		t.Errorf("URIs %v, want [ddpm:role/trainer]", cert.URIs)
	}
	if ca := readCert(t, filepath.Join(dir, CAFile)); !cert.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("NotAfter %v, want the CA's %v", cert.NotAfter, ca.NotAfter)
	}
	if !slices.Contains(cert.DNSNames, NodeName) || !slices.Contains(cert.DNSNames, "trainer-0.ddpm.default.svc") {
		t.Errorf("DNS names %v", cert.DNSNames)
	}
	if r, err := RoleOf(readCert(t, filepath.Join(dir, CertFile))); r != RoleNone || err != nil {
		t.Errorf("init's certificate: role %q, %v; want none", r, err)
	}
	b, err := Load(Config{Dir: out})
	if err != nil {
		t.Fatal(err)
	}
	if b.Role() != RoleTrainer || !strings.Contains(b.String(), "join secret, role trainer, node certificate valid until") {
		t.Errorf("Role %q, String %q", b.Role(), b.String())
	}

	for _, tc := range []struct {
		name     string
		src, dst string
		o        IssueOptions
		is       error
		want     string
	}{
		{"into itself", dir, out, IssueOptions{Role: RoleOperator}, ErrExists,
			"tlsauth: refusing to overwrite: " + filepath.Join(out, CAFile) + " already exists (remove it or choose another directory)"},
		{"no CA key", out, "", IssueOptions{Role: RoleOperator}, ErrMissing,
			"tlsauth: missing file: " + filepath.Join(out, CAKeyFile) + " (issuing takes the CA's key: give the directory ddpm certs init made, not a copy made for the nodes)"},
		{"unknown role", dir, "", IssueOptions{Role: "admin"}, ErrBadOption,
			`tlsauth: bad option: role "admin": want coordinator, trainer or operator`},
		{"no role", dir, "", IssueOptions{}, ErrBadOption,
			`tlsauth: bad option: role "": want coordinator, trainer or operator`},
		{"past the CA", dir, "", IssueOptions{Role: RoleOperator, Days: 31, Now: now}, ErrBadOption,
			"tlsauth: bad option: --days 31: the CA of " + dir + " expires at 2026-12-30T12:00:00Z, in 30 days; give --days 30 or less, or leave --days out (the CA's expiry)"},
		{"CA ending today", dir, "", IssueOptions{Role: RoleOperator, Days: 1, Now: now.AddDate(0, 0, 30).Add(-time.Hour)}, ErrBadOption,
			"tlsauth: bad option: --days 1: the CA of " + dir + " expires at 2026-12-30T12:00:00Z, in less than a day; leave --days out (the CA's expiry), or make a new directory with ddpm certs init"},
		{"CA expired", dir, "", IssueOptions{Role: RoleOperator, Now: now.AddDate(0, 0, 31)}, ErrInvalid,
			"tlsauth: invalid certificate material: " + filepath.Join(dir, CAFile) + " expired at 2026-12-30T12:00:00Z (make a new directory with ddpm certs init)"},
	} {
		dst := tc.dst
		if dst == "" {
			dst = filepath.Join(t.TempDir(), "x")
		}
		_, err := Issue(tc.src, dst, tc.o)
		if !errors.Is(err, tc.is) || err.Error() != tc.want {
			t.Errorf("%s: %v\nwant %q", tc.name, err, tc.want)
		}
		if tc.dst == "" {
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("%s: %s created", tc.name, dst)
			}
		}
	}
	if r, err := RoleOf(readCert(t, filepath.Join(out, CertFile))); r != RoleTrainer || err != nil {
		t.Errorf("after the refusals: role %q, %v", r, err)
	}
}

// TestMethodRolesCoverAPI: every method of the services in api/*.proto has a row in MethodRoles,
// and every row names such a method (a new RPC without a rule would be open to no role).
func TestMethodRolesCoverAPI(t *testing.T) {
	var methods []string
	for _, sd := range []grpc.ServiceDesc{api.Coordinator_ServiceDesc, api.Ring_ServiceDesc, api.CheckpointTransfer_ServiceDesc} {
		for _, m := range sd.Methods {
			methods = append(methods, "/"+sd.ServiceName+"/"+m.MethodName)
		}
		for _, s := range sd.Streams {
			methods = append(methods, "/"+sd.ServiceName+"/"+s.StreamName)
		}
	}
	for _, m := range methods {
		if len(MethodRoles[m]) == 0 {
			t.Errorf("%s: no roles in MethodRoles", m)
		}
		if _, ok := ServerRole(m); !ok {
			t.Errorf("%s: no server role (serviceServers)", m)
		}
	}
	for m := range MethodRoles {
		if !slices.Contains(methods, m) {
			t.Errorf("MethodRoles names %s, no method of api/*.proto", m)
		}
	}
	if len(methods) != 11 {
		t.Errorf("%d methods, want 11: %q", len(methods), methods)
	}
}

// TestGRPCRolesEnforced: over real mutual TLS on loopback, a trainer certificate may join, watch
// its assignment, stream the ring and fetch a checkpoint but gets PERMISSION_DENIED on
// RollbackRun and SubmitRun, naming its role and the method, with one server log line each; an
// operator certificate may call Status, RollbackRun and Fetch but not Join, WatchAssignment or
// the ring; a coordinator's every Coordinator call but not the ring or Fetch; a certificate
// without a role (init's) everything; a trainer certificate of another CA is still refused in
// the TLS handshake.
func TestGRPCRolesEnforced(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	addr := coordinatorServer(t, load(t, dir, log))

	full := func(method string) string {
		switch method {
		case "Ring.Stream":
			return "/ddpm.allreduce.v1.Ring/Stream"
		case "CheckpointTransfer.Fetch":
			return "/ddpm.checkpoint.v1.CheckpointTransfer/Fetch"
		}
		return "/ddpm.coordinator.v1.Coordinator/" + method
	}
	denied := func(role Role, method string) string {
		return "ddpm: role " + string(role) + " may not call " + full(method)
	}
	all := map[string]string{"Join": "", "Status": "", "WatchAssignment": "", "RollbackRun": "", "SubmitRun": "", "Ring.Stream": "", "CheckpointTransfer.Fetch": ""}
	cases := map[Role]map[string]string{ // method -> "" (allowed) or the exact PERMISSION_DENIED message
		RoleTrainer: {
			"Join": "", "Status": "", "WatchAssignment": "", "Ring.Stream": "", "CheckpointTransfer.Fetch": "",
			"RollbackRun": denied(RoleTrainer, "RollbackRun") + " (roles allowed: coordinator, operator)",
			"SubmitRun":   denied(RoleTrainer, "SubmitRun") + " (roles allowed: coordinator)",
		},
		RoleOperator: {
			"Status": "", "RollbackRun": "", "CheckpointTransfer.Fetch": "",
			"Ring.Stream":     denied(RoleOperator, "Ring.Stream") + " (roles allowed: trainer)",
			"Join":            denied(RoleOperator, "Join") + " (roles allowed: coordinator, trainer)",
			"WatchAssignment": denied(RoleOperator, "WatchAssignment") + " (roles allowed: coordinator, trainer)",
			"SubmitRun":       denied(RoleOperator, "SubmitRun") + " (roles allowed: coordinator)",
		},
		RoleCoordinator: {"Join": "", "Status": "", "WatchAssignment": "", "RollbackRun": "", "SubmitRun": "",
			"Ring.Stream":              denied(RoleCoordinator, "Ring.Stream") + " (roles allowed: trainer)",
			"CheckpointTransfer.Fetch": denied(RoleCoordinator, "CheckpointTransfer.Fetch") + " (roles allowed: trainer, operator)",
		},
		RoleNone: all,
	}
	for _, role := range []Role{RoleTrainer, RoleOperator, RoleCoordinator, RoleNone} {
		certs := dir
		if role != RoleNone {
			certs = issue(t, dir, role)
		}
		errs := coordCalls(t, addr, load(t, certs, nil).DialOptions()...)
		for method, want := range cases[role] {
			err := errs[method]
			switch {
			case want == "" && err != nil:
				t.Errorf("%s %s: %v, want allowed", role, method, err)
			case want != "" && (status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want):
				t.Errorf("%s %s: %v\nwant PermissionDenied %q", role, method, err, want)
			}
			if want != "" {
				waitLog(t, log, "tlsauth: refused call", "method="+full(method), "cert_role="+string(role))
			}
		}
	}
	if n := strings.Count(log.String(), "tlsauth: refused call"); n != 8 {
		t.Errorf("%d refusal lines, want 8 (one per refused call):\n%s", n, log)
	}

	// A trainer certificate of another CA: refused in the handshake, as without roles.
	foreign := issue(t, newDir(t), RoleTrainer)
	err := coordCalls(t, addr, tlsCreds(poolOf(t, dir), pairOf(t, foreign)))["Join"]
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "remote error: tls: unknown certificate authority") {
		t.Fatalf("foreign trainer: %v, want Unavailable with 'tls: unknown certificate authority'", err)
	}
	waitLog(t, log, "tlsauth: refused connection", "x509: certificate signed by unknown authority")
}

// TestRaftRefusesNonCoordinatorRoles: a raft cluster of coordinator certificates (issued) elects
// and commits; a trainer's or operator's certificate with the right CA and join secret is refused
// on its raft port (the dialer told ErrRole naming its role, the replica logging the peer's
// role); a certificate without a role still links, one of another CA is refused as before; and a
// replica's dial to a raft port that presents a trainer certificate is refused before the join
// secret is sent.
func TestRaftRefusesNonCoordinatorRoles(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	nodes := startCluster(t, load(t, issue(t, dir, RoleCoordinator), log), log)
	leader := leaderOf(t, nodes)
	applyOnLeader(t, nodes, leader, []byte{0, 0, 0, 0, 0, 0, 0, 5})
	target := raft.ServerAddress(nodes[0].addr)

	dial := func(b *Bundle, to raft.ServerAddress) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sl := b.RaftStreamLayer(ln, nil)
		defer sl.Close()
		c, err := sl.Dial(to, 2*time.Second)
		if c != nil {
			c.Close()
		}
		return err
	}
	// A coordinator certificate of another CA: refused in the handshake, as without roles.
	if err := dial(load(t, issue(t, newDir(t), RoleCoordinator), nil), target); err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		t.Fatalf("foreign coordinator dialing raft: %v", err)
	}
	waitLog(t, log, "tlsauth: refused raft connection", "remote error: tls: bad certificate")
	for _, role := range []Role{RoleTrainer, RoleOperator} {
		err := dial(load(t, issue(t, dir, role), nil), target)
		want := "tlsauth: certificate role refused: raft peer " + string(target) + " refused our certificate of role " + string(role) +
			": raft links take coordinator certificates (ddpm certs issue --role coordinator)"
		if !errors.Is(err, ErrRole) || err.Error() != want {
			t.Fatalf("%s dialing raft: %v\nwant %q", role, err, want)
		}
		waitLog(t, log, "tlsauth: refused raft connection", "presented a certificate of role "+string(role)+": raft links take coordinator certificates")
	}
	if err := dial(load(t, dir, nil), target); err != nil {
		t.Fatalf("certificate without a role dialing raft: %v", err)
	}

	// A raft port behind a trainer's certificate: a replica does not link to it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlog := &syncBuf{}
	impostor := load(t, issue(t, dir, RoleTrainer), tlog).RaftStreamLayer(ln, nil)
	defer impostor.Close()
	go func() {
		for {
			c, err := impostor.Accept()
			if err != nil {
				return
			}
			go func() { c.Read(make([]byte, 1)); c.Close() }()
		}
	}()
	err = dial(load(t, issue(t, dir, RoleCoordinator), nil), raft.ServerAddress(ln.Addr().String()))
	want := "tlsauth: certificate role refused: raft peer " + ln.Addr().String() + " presented a certificate of role trainer: raft links take coordinator certificates"
	if !errors.Is(err, ErrRole) || err.Error() != want {
		t.Fatalf("dialing a trainer's raft port: %v\nwant %q", err, want)
	}
	// Had the replica sent its preamble, the port would have accepted it: it got none.
	waitLog(t, tlog, "tlsauth: refused raft connection", "sent no join-secret preamble: EOF")

	// The cluster is undisturbed.
	if err := leaderOf(t, nodes).r.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
}

// TestUnknownRoleRefused: a certificate of the cluster's CA carrying a role this release does not
// know ("ddpm:role/admin"), or two roles, gets no rights: Load refuses its directory naming
// node.crt, and a server refuses its calls with PERMISSION_DENIED saying why.
func TestUnknownRoleRefused(t *testing.T) {
	dir := newDir(t)
	ca, caKey, _, err := readCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	withURIs := func(uris ...string) string {
		out := copyDir(t, dir)
		tmpl := readCert(t, filepath.Join(dir, CertFile))
		tmpl.URIs = nil
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		pair := pairOf(t, dir)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pair.Leaf.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return out
	}
	log := &syncBuf{}
	addr := coordinatorServer(t, load(t, dir, log))
	for _, tc := range []struct {
		uris []string
		why  string
	}{
		{[]string{"ddpm:role/admin"}, `the certificate carries the unknown role "admin" (want coordinator, trainer or operator)`},
		{[]string{"ddpm:role/trainer", "ddpm:role/coordinator"}, "the certificate carries 2 roles (trainer, coordinator), want at most one"},
	} {
		d := withURIs(tc.uris...)
		_, err := Load(Config{Dir: d})
		if want := "tlsauth: invalid certificate material: " + filepath.Join(d, CertFile) + ": " + tc.why; !errors.Is(err, ErrInvalid) || err.Error() != want {
			t.Errorf("Load %v: %v\nwant %q", tc.uris, err, want)
		}
		// A client built by hand from the directory Load refuses.
		err = coordCalls(t, addr, tlsCreds(poolOf(t, dir), pairOf(t, d)), grpc.WithPerRPCCredentials(secretCreds{load(t, dir, nil).secret}))["Status"]
		if want := "ddpm: refused: " + tc.why; status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
			t.Errorf("call with %v: %v\nwant PermissionDenied %q", tc.uris, err, want)
		}
		waitLog(t, log, "tlsauth: refused call", strings.ReplaceAll(tc.why, `"`, `\"`)) // quotes escaped by the text handler
	}
}

// TestGRPCClientRefusesWrongRoleServer: a server holding a certificate of the cluster's CA but of
// the wrong role for the service (an operator's serving the Coordinator service, a coordinator's
// serving the ring and checkpoint transfer) gets no call from a client of any role: each fails
// with PERMISSION_DENIED naming the server's role and the role that serves the method, and the
// server sees nothing, not even a call without a join secret. The right role's server, or one
// without a role, is called as before.
func TestGRPCClientRefusesWrongRoleServer(t *testing.T) {
	dir := newDir(t)
	refused := func(server Role, method string) string {
		want, _ := ServerRole(method)
		return "ddpm: this process refused the server: its certificate has role " + string(server) + ", and " + method + " is served by role " + string(want)
	}
	coord := "/ddpm.coordinator.v1.Coordinator/"
	for _, tc := range []struct {
		server  Role
		allowed []string // the calls a no-role client gets through; the others are refused
	}{
		{RoleOperator, nil},
		{RoleTrainer, []string{"Ring.Stream", "CheckpointTransfer.Fetch"}},
		{RoleCoordinator, []string{"Join", "Status", "RollbackRun", "SubmitRun", "WatchAssignment"}},
	} {
		log := &syncBuf{}
		addr := coordinatorServer(t, load(t, issue(t, dir, tc.server), log))
		for _, client := range []Role{RoleNone, RoleTrainer} {
			certs := dir
			if client != RoleNone {
				certs = issue(t, dir, client)
			}
			errs := coordCalls(t, addr, load(t, certs, nil).DialOptions()...)
			for name, err := range errs {
				method := coord + name
				switch name {
				case "Ring.Stream":
					method = "/ddpm.allreduce.v1.Ring/Stream"
				case "CheckpointTransfer.Fetch":
					method = "/ddpm.checkpoint.v1.CheckpointTransfer/Fetch"
				}
				if slices.Contains(tc.allowed, name) {
					// Sent: the server's role check decides (a trainer may not submit a run).
					if st := status.Convert(err); err != nil && st.Code() != codes.PermissionDenied || ServerRefusal(err) != "" {
						t.Errorf("%s server, %s client, %s: %v, want it sent", tc.server, client, name, err)
					}
					continue
				}
				if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != refused(tc.server, method) {
					t.Errorf("%s server, %s client, %s: %v\nwant PermissionDenied %q", tc.server, client, name, err, refused(tc.server, method))
				}
				if why := ServerRefusal(fmt.Errorf("wrapped: %w", err)); why != strings.TrimPrefix(refused(tc.server, method), "ddpm: this process refused the server: ") {
					t.Errorf("ServerRefusal = %q", why)
				}
			}
		}
		if tc.allowed == nil {
			if s := log.String(); s != "" {
				t.Errorf("the %s server saw calls:\n%s", tc.server, s)
			}
		}
	}
}
