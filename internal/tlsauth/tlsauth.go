// Package tlsauth authenticates and encrypts every link of a ddpm cluster: gRPC (trainer to
// coordinator, the all-reduce ring, checkpoint transfer) and the raft transport between
// coordinator replicas.
//
// Two checks guard each link, and both must pass:
//
//   - mutual TLS 1.3: both ends present a certificate signed by the cluster's CA (ca.crt), and the
//     dialing end checks that the server's certificate names the host it dialed (or
//     Config.ServerName when set);
//   - the join secret: a random token shared by the processes of one run (file join-secret). A
//     process holding a valid certificate but not the secret is refused with
//     codes.Unauthenticated, so one CA can serve several runs without them mixing. They do not
//     mix, but the secret is not kept from them: once TLS is up a dialing process sends its
//     secret (gRPC metadata) or the secret's SHA-256 (the raft preamble, which passes a raft port
//     as well as the secret) to any server its CA vouches for, so a process pointed at another
//     run's address under the same CA hands that run its secret. Keep one CA per run, as
//     `ddpm certs init` and `ddpm local` make: then such a dial fails verifying the server's
//     certificate before anything is sent.
//
// The material lives in one directory, made by `ddpm certs init DIR` (see Init) or mounted from a
// Kubernetes secret:
//
//	ca.crt       the cluster CA (PEM); read by every process
//	node.crt     the node certificate (PEM), server and client usage, signed by ca.crt; Init's
//	             carries no role (all rights), Issue's one role (see Role)
//	node.key     its private key (PEM, PKCS#8)
//	join-secret  the join secret (one line)
//	ca.key       the CA's private key; written by Init, never read by Load: keep it off the nodes
//
// `ddpm certs issue` (Issue) makes such a directory for one role (coordinator, trainer, operator)
// from the CA of Init's: the servers then refuse what the role may not do (raft links, gRPC
// methods; see Role and MethodRoles).
//
// HTTPServer serves a process's HTTP endpoints over HTTPS with the same material (--http-tls):
// the probes open to anyone, the rest only to a client certificate of the CA (GuardHTTP).
//
// Plain text is available only by asking for it (Config.Insecure, the --insecure flag); Load
// refuses a Config that names neither a directory nor Insecure.
package tlsauth

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// File names inside a certificate directory.
const (
	CAFile     = "ca.crt"
	CAKeyFile  = "ca.key"
	CertFile   = "node.crt"
	KeyFile    = "node.key"
	SecretFile = "join-secret"
)

// NodeName is a DNS name every certificate made by Init carries. A client that sets
// Config.ServerName = NodeName accepts any node of the cluster whatever address it dialed (useful
// when peers advertise pod IPs that are unknown when the certificates are made).
const NodeName = "ddpm-node"

// MetadataKey is the gRPC metadata key that carries the join secret.
const MetadataKey = "ddpm-join-secret"

// MinSecretLen is the shortest join secret Load accepts, in bytes (Init writes 64).
const MinSecretLen = 16

// Errors returned by this package, wrapped with %w and the file or peer concerned.
var (
	// ErrNoMode: the Config names neither a certificate directory nor Insecure, or both.
	ErrNoMode = errors.New("tlsauth: choose TLS (--certs DIR) or plain text (--insecure)")
	// ErrMissing: a file of the certificate directory does not exist.
	ErrMissing = errors.New("tlsauth: missing file")
	// ErrInvalid: a file exists but does not hold usable material (bad PEM, key does not match,
	// certificate not signed by the CA, expired, secret too short).
	ErrInvalid = errors.New("tlsauth: invalid certificate material")
	// ErrExists: Init refuses to overwrite an existing file.
	ErrExists = errors.New("tlsauth: refusing to overwrite")
	// ErrBadOption: Init got an unusable host name or validity.
	ErrBadOption = errors.New("tlsauth: bad option")
	// ErrJoinSecret: a raft peer refused our join secret, or presented a wrong one.
	ErrJoinSecret = errors.New("tlsauth: join secret rejected")
)

// Config selects how a process secures its links. Exactly one of Dir and Insecure must be set.
type Config struct {
	// Dir is the certificate directory (ca.crt, node.crt, node.key, join-secret).
	Dir string
	// Insecure selects plain-text links with no authentication at all.
	Insecure bool
	// ServerName, when set, is the name a dialing process expects in every server's certificate
	// instead of the dialed host (for example NodeName). Empty: the dialed host.
	ServerName string
	// Logger receives one Warn line per refused connection or call (nil: discarded).
	Logger *slog.Logger
}

// AddFlags registers --certs and --insecure on fs and returns the Config they fill. Pass the
// Config to Load after parsing. The Config expects NodeName in servers' certificates rather than
// the dialed host: every certificate names NodeName (Init's, shared by every process unless role
// certificates are issued, and each of Issue's), so a per-host name check would add no assurance, and peers may advertise pod IPs that no
// certificate names.
func AddFlags(fs *pflag.FlagSet) *Config {
	c := &Config{ServerName: NodeName}
	fs.StringVar(&c.Dir, "certs", "", "`DIR` with ca.crt, node.crt, node.key and join-secret (make one with: ddpm certs init DIR)")
	fs.BoolVar(&c.Insecure, "insecure", false, "plain-text links with no authentication (development only; excludes --certs)")
	return c
}

// Bundle is the loaded security material of one process. It is immutable and safe for
// concurrent use.
type Bundle struct {
	insecure   bool
	serverTLS  *tls.Config // mTLS, TLS 1.3, client certificates verified against the CA
	clientTLS  *tls.Config // TLS 1.3, servers verified against the CA, our certificate offered
	secret     string
	digest     [sha256.Size]byte // sha256(secret): compared in constant time
	log        *slog.Logger
	refusals   *refusalLimiter // rate-limits the refusal lines written to log
	notAfter   time.Time
	serverName string
	role       Role // of node.crt
}

// Load reads the certificate directory named by cfg (or returns a plain-text Bundle when
// cfg.Insecure). It checks that node.key matches node.crt, that node.crt is signed by ca.crt for
// both server and client use and valid now and carries at most one role, a known one (RoleOf),
// and that the join secret has at least MinSecretLen bytes. Errors wrap ErrNoMode, ErrMissing or
// ErrInvalid and name the file.
func Load(cfg Config) (*Bundle, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.Insecure && cfg.Dir != "":
		return nil, fmt.Errorf("%w: --insecure and --certs %s exclude each other", ErrNoMode, cfg.Dir)
	case cfg.Insecure:
		return &Bundle{insecure: true, log: log, refusals: newRefusalLimiter(log)}, nil
	case cfg.Dir == "":
		return nil, fmt.Errorf("%w: no certificate directory given (make one with `ddpm certs init DIR`)", ErrNoMode)
	}
	read := func(name string) ([]byte, error) {
		p := filepath.Join(cfg.Dir, name)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			// The same line serves a cluster's processes and its clients (status, loss,
			// fetch), which need the cluster's own directory, not a new one.
			return nil, fmt.Errorf("%w: %s (--certs takes the directory `ddpm certs init DIR` made for the cluster; a ddpm local run's is RUN/certs)", ErrMissing, p)
		}
		if err != nil {
			return nil, fmt.Errorf("tlsauth: read %s: %w", p, err)
		}
		return b, nil
	}
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := read(CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	secretRaw, err := read(SecretFile)
	if err != nil {
		return nil, err
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalid, filepath.Join(cfg.Dir, CAFile))
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %s and %s: %v", ErrInvalid, filepath.Join(cfg.Dir, CertFile), filepath.Join(cfg.Dir, KeyFile), err)
	}
	leaf := pair.Leaf
	if leaf == nil { // tls.X509KeyPair fills Leaf since Go 1.23; parse for older behaviour
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, filepath.Join(cfg.Dir, CertFile), err)
		}
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return nil, fmt.Errorf("%w: %s against %s: %v", ErrInvalid, filepath.Join(cfg.Dir, CertFile), filepath.Join(cfg.Dir, CAFile), err)
		}
	}
	role, err := RoleOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, filepath.Join(cfg.Dir, CertFile), strings.TrimPrefix(err.Error(), ErrRole.Error()+": "))
	}
	secret, err := parseSecret(filepath.Join(cfg.Dir, SecretFile), secretRaw)
	if err != nil {
		return nil, err
	}

	b := &Bundle{
		secret:     secret,
		digest:     sha256.Sum256([]byte(secret)),
		log:        log,
		refusals:   newRefusalLimiter(log),
		notAfter:   leaf.NotAfter,
		serverName: cfg.ServerName,
		role:       role,
	}
	b.serverTLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	b.clientTLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		ServerName:   cfg.ServerName,
	}
	return b, nil
}

// parseSecret returns the join secret held in raw (the file p): one line of at least
// MinSecretLen bytes, surrounding white space dropped. Errors wrap ErrInvalid and name p.
func parseSecret(p string, raw []byte) (string, error) {
	secret := strings.TrimSpace(string(raw))
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("%w: %s holds %d bytes, want at least %d", ErrInvalid, p, len(secret), MinSecretLen)
	}
	if strings.ContainsAny(secret, "\r\n") {
		return "", fmt.Errorf("%w: %s must be one line", ErrInvalid, p)
	}
	return secret, nil
}

// Role is the role of the node certificate (RoleNone: all rights, and when Insecure).
func (b *Bundle) Role() Role { return b.role }

// Insecure reports whether the Bundle makes plain-text, unauthenticated links.
func (b *Bundle) Insecure() bool { return b.insecure }

// NotAfter is the expiry of the node certificate (zero when Insecure).
func (b *Bundle) NotAfter() time.Time { return b.notAfter }

// String describes the mode in one line for start-up logs.
func (b *Bundle) String() string {
	if b.insecure {
		return "plain text, unauthenticated (--insecure)"
	}
	role := ""
	if b.role != RoleNone {
		role = ", role " + string(b.role)
	}
	return fmt.Sprintf("mutual TLS 1.3 + join secret%s, node certificate valid until %s", role, b.notAfter.UTC().Format(time.RFC3339))
}
