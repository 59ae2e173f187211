package tlsauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// syncBuf is a goroutine-safe log sink: servers log refusals from their own goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitLog waits until the log holds all of want (servers log after the client has seen its error).
func waitLog(t *testing.T, log *syncBuf, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := log.String()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server log lacks %q; it holds:\n%s", want, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newDir(t *testing.T, hosts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := Init(dir, InitOptions{Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func load(t *testing.T, dir string, log *syncBuf) *Bundle {
	t.Helper()
	cfg := Config{Dir: dir}
	if log != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	b, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// copyDir copies a certificate directory so one file can be swapped.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	for _, n := range []string{CAFile, CertFile, KeyFile, SecretFile} {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func readCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", p)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInitMakesCAAndNodeCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	paths, err := Init(dir, InitOptions{Hosts: []string{"coord-0.ddpm.default.svc", "*.ddpm.default.svc", "10.1.2.3"}, Days: 30, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 5 {
		t.Fatalf("wrote %d files, want 5", len(paths))
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	ca := readCert(t, filepath.Join(dir, CAFile))
	node := readCert(t, filepath.Join(dir, CertFile))
	if !ca.IsCA || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA=%v MaxPathLenZero=%v KeyUsage=%v", ca.IsCA, ca.MaxPathLenZero, ca.KeyUsage)
	}
	for name, c := range map[string]*x509.Certificate{"ca": ca, "node": node} {
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s key: %T, want ECDSA P-256", name, c.PublicKey)
		}
		if !c.NotBefore.Equal(now.Add(-time.Hour)) || !c.NotAfter.Equal(now.Add(30*24*time.Hour)) {
			t.Errorf("%s validity %v..%v", name, c.NotBefore, c.NotAfter)
		}
	}
	if node.IsCA {
		t.Error("node certificate is a CA")
	}
	wantEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if len(node.ExtKeyUsage) != 2 || node.ExtKeyUsage[0] != wantEKU[0] || node.ExtKeyUsage[1] != wantEKU[1] {
		t.Errorf("node EKU %v, want %v", node.ExtKeyUsage, wantEKU)
	}
	if got, want := strings.Join(node.DNSNames, ","), "ddpm-node,localhost,coord-0.ddpm.default.svc,*.ddpm.default.svc"; got != want {
		t.Errorf("DNS SANs %q, want %q", got, want)
	}
	var ips []string
	for _, ip := range node.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got, want := strings.Join(ips, ","), "127.0.0.1,::1,10.1.2.3"; got != want {
		t.Errorf("IP SANs %q, want %q", got, want)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, host := range []string{"localhost", "127.0.0.1", "coord-0.ddpm.default.svc", "trainer-3.ddpm.default.svc", "10.1.2.3", NodeName} {
		if _, err := node.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, CurrentTime: now}); err != nil {
			t.Errorf("node certificate for %s: %v", host, err)
		}
	}
	if _, err := node.Verify(x509.VerifyOptions{Roots: pool, DNSName: "evil.example.com", CurrentTime: now}); err == nil {
		t.Error("node certificate verified for a name it does not carry")
	}
	secret, _ := os.ReadFile(filepath.Join(dir, SecretFile))
	if len(secret) != 65 || secret[64] != '\n' {
		t.Errorf("join-secret is %q, want 64 hex digits and a newline", secret)
	}
	other := newDir(t)
	secret2, _ := os.ReadFile(filepath.Join(other, SecretFile))
	if bytes.Equal(secret, secret2) {
		t.Error("two directories got the same join secret")
	}
}

func TestInitRefusesToOverwrite(t *testing.T) {
	dir := newDir(t)
	before, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	_, err := Init(dir, InitOptions{})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second Init: %v, want ErrExists", err)
	}
	want := "tlsauth: refusing to overwrite: " + filepath.Join(dir, CAFile) + " already exists (remove it or choose another directory)"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	after, _ := os.ReadFile(filepath.Join(dir, KeyFile))
	if !bytes.Equal(before, after) {
		t.Error("node.key changed")
	}
	// One stray file is enough to refuse, and nothing else is written.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, SecretFile), []byte("keep me"), 0o600)
	if _, err := Init(dir2, InitOptions{}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), SecretFile) {
		t.Fatalf("Init over a join-secret: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir2, CAFile)); !os.IsNotExist(err) {
		t.Errorf("ca.crt written although Init refused: %v", err)
	}
}

func TestInitRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		o    InitOptions
		want string
	}{
		{InitOptions{Hosts: []string{"node-1:7000"}}, `tlsauth: bad option: host "node-1:7000": give a host name or IP without a port`},
		{InitOptions{Hosts: []string{"a..b"}}, `tlsauth: bad option: host "a..b": empty or over-long label`},
		{InitOptions{Hosts: []string{"bad_name"}}, `tlsauth: bad option: host "bad_name": character '_' not allowed in a DNS name`},
		{InitOptions{Hosts: []string{"-x.svc"}}, `tlsauth: bad option: host "-x.svc": character '-' not allowed in a DNS name`},
		{InitOptions{Days: -1}, "tlsauth: bad option: --days -1: want 1..36500"},
	} {
		dir := t.TempDir()
		_, err := Init(dir, tc.o)
		if !errors.Is(err, ErrBadOption) || err.Error() != tc.want {
			t.Errorf("Init(%+v) = %v, want %q", tc.o, err, tc.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("Init(%+v) wrote %d files", tc.o, len(ents))
		}
	}
}

func TestLoadErrors(t *testing.T) {
	good := newDir(t)
	other := newDir(t)
	if _, err := Load(Config{}); !errors.Is(err, ErrNoMode) {
		t.Errorf("empty Config: %v", err)
	}
	if _, err := Load(Config{Dir: good, Insecure: true}); !errors.Is(err, ErrNoMode) {
		t.Errorf("Dir and Insecure: %v", err)
	}
	if b, err := Load(Config{Insecure: true}); err != nil || !b.Insecure() {
		t.Errorf("Insecure: %v %v", b, err)
	}

	missing := copyDir(t, good)
	os.Remove(filepath.Join(missing, KeyFile))
	_, err := Load(Config{Dir: missing})
	if want := "tlsauth: missing file: " + filepath.Join(missing, KeyFile) + " (--certs takes the directory `ddpm certs init DIR` made for the cluster; a ddpm local run's is RUN/certs)"; !errors.Is(err, ErrMissing) || err.Error() != want {
		t.Errorf("missing key: %v, want %q", err, want)
	}

	swap := func(name, from string) string {
		d := copyDir(t, good)
		b, _ := os.ReadFile(filepath.Join(from, name))
		os.WriteFile(filepath.Join(d, name), b, 0o600)
		return d
	}
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"key of another node", swap(KeyFile, other), "private key does not match public key"},
		{"CA of another cluster", swap(CAFile, other), "certificate signed by unknown authority"},
	} {
		_, err := Load(Config{Dir: tc.dir})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", tc.name, err, tc.want)
		}
	}
	short := copyDir(t, good)
	os.WriteFile(filepath.Join(short, SecretFile), []byte("abc\n"), 0o600)
	_, err = Load(Config{Dir: short})
	if want := "tlsauth: invalid certificate material: " + filepath.Join(short, SecretFile) + " holds 3 bytes, want at least 16"; err == nil || err.Error() != want {
		t.Errorf("short secret: %v, want %q", err, want)
	}
	garbage := copyDir(t, good)
	os.WriteFile(filepath.Join(garbage, CAFile), []byte("not pem"), 0o600)
	if _, err := Load(Config{Dir: garbage}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("garbage CA: %v", err)
	}
	expired := filepath.Join(t.TempDir(), "old")
	if _, err := Init(expired, InitOptions{Days: 1, Now: time.Now().Add(-72 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Config{Dir: expired}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired node certificate: %v", err)
	}
}

// server starts a real gRPC server on loopback with b's options and the standard health service
// (unary Check, streaming Watch).
func server(t *testing.T, b *Bundle) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(b.ServerOptions()...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// call makes one unary and one streaming call; it returns the first error.
func call(t *testing.T, addr string, opts ...grpc.DialOption) error {
	t.Helper()
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)
	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health status %v", resp.Status)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if m, err := w.Recv(); err != nil {
		return err
	} else if m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch status %v", m.Status)
	}
	return nil
}

// tlsCreds builds client credentials by hand (to leave out the certificate or the secret), with
// the same wait for the server's verdict as DialOptions.
func tlsCreds(roots *x509.CertPool, certs ...tls.Certificate) grpc.DialOption {
	return grpc.WithTransportCredentials(verdictWaiter{credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, Certificates: certs})})
}

func pairOf(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	p, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func poolOf(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(readCert(t, filepath.Join(dir, CAFile)))
	return pool
}

func TestGRPCGoodClientSucceeds(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	addr := server(t, load(t, dir, log))
	// A second process of the same cluster: its own Bundle from the same directory.
	if err := call(t, addr, load(t, dir, nil).DialOptions()...); err != nil {
		t.Fatalf("good client: %v", err)
	}
	// The address-independent name works too.
	b, err := Load(Config{Dir: dir, ServerName: NodeName})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, addr, b.DialOptions()...); err != nil {
		t.Fatalf("good client with ServerName %s: %v", NodeName, err)
	}
	if s := log.String(); s != "" {
		t.Errorf("server logged refusals for good clients:\n%s", s)
	}
}

func TestGRPCRefusesClientWithoutCertificate(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	addr := server(t, load(t, dir, log))
	err := call(t, addr, tlsCreds(poolOf(t, dir)))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "tls: certificate required") {
		t.Fatalf("client side: %v, want Unavailable with 'tls: certificate required'", err)
	}
	waitLog(t, log, "tlsauth: refused connection", "tls: client didn't provide a certificate")
}

func TestGRPCRefusesClientFromAnotherCA(t *testing.T) {
	dir, foreign := newDir(t), newDir(t)
	log := &syncBuf{}
	addr := server(t, load(t, dir, log))
	// The client trusts our CA (so it accepts the server) but holds a certificate of another CA.
	err := call(t, addr, tlsCreds(poolOf(t, dir), pairOf(t, foreign)))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "remote error: tls: unknown certificate authority") {
		t.Fatalf("client side: %v, want Unavailable with 'tls: unknown certificate authority'", err)
	}
	waitLog(t, log, "tlsauth: refused connection", "x509: certificate signed by unknown authority")

	// A whole foreign process: it refuses our server as well.
	err = call(t, addr, load(t, foreign, nil).DialOptions()...)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority") {
		t.Fatalf("foreign process: %v", err)
	}
	waitLog(t, log, "remote error: tls: bad certificate")
}

func TestGRPCRefusesWrongOrMissingJoinSecret(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	addr := server(t, load(t, dir, log))

	wrong := copyDir(t, dir)
	os.WriteFile(filepath.Join(wrong, SecretFile), []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	err := call(t, addr, load(t, wrong, nil).DialOptions()...)
	if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != msgWrongSecret {
		t.Fatalf("wrong secret: %v", err)
	}
	waitLog(t, log, "tlsauth: refused call", "method=/grpc.health.v1.Health/Check", msgWrongSecret)

	// A valid certificate but no secret at all, on a streaming call.
	cc, err := grpc.NewClient(addr, tlsCreds(poolOf(t, dir), pairOf(t, dir)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != msgNoSecret {
		t.Fatalf("no secret: %v", err)
	}
	waitLog(t, log, "method=/grpc.health.v1.Health/Watch", msgNoSecret)
}

func TestGRPCPlainTextClientRefused(t *testing.T) {
	dir := newDir(t)
	log := &syncBuf{}
	addr := server(t, load(t, dir, log))
	err := call(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("plain-text client: %v", err)
	}
	waitLog(t, log, "tlsauth: refused connection", "first record does not look like a TLS handshake")
}

func TestGRPCInsecureMode(t *testing.T) {
	b, err := Load(Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, server(t, b), b.DialOptions()...); err != nil {
		t.Fatalf("insecure: %v", err)
	}
	if !strings.Contains(b.String(), "--insecure") {
		t.Errorf("String() = %q", b.String())
	}
}

func TestAddFlags(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	cfg := AddFlags(fs)
	if err := fs.Parse([]string{"--certs", "/etc/ddpm/certs"}); err != nil {
		t.Fatal(err)
	}
	if cfg.Dir != "/etc/ddpm/certs" || cfg.Insecure || cfg.ServerName != NodeName {
		t.Errorf("--certs: %+v", *cfg)
	}
	fs = pflag.NewFlagSet("y", pflag.ContinueOnError)
	cfg = AddFlags(fs)
	if err := fs.Parse([]string{"--insecure"}); err != nil {
		t.Fatal(err)
	}
	if b, err := Load(*cfg); err != nil || !b.Insecure() {
		t.Errorf("--insecure: %v %v", b, err)
	}
}
