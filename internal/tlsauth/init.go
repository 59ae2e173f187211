package tlsauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ddpm/internal/atomicfile"
)

// InitOptions configures Init.
type InitOptions struct {
	// Hosts are extra names for the node certificate: DNS names (wildcards such as
	// "*.ddpm.default.svc.cluster.local" allowed) or IP addresses. localhost, 127.0.0.1, ::1 and
	// NodeName are always included.
	Hosts []string
	// Days is the validity of the CA and node certificates (0: 365).
	Days int
	// Now is the start of validity (zero: the current time). Certificates are valid from one hour
	// before it, to absorb clock skew between machines.
	Now time.Time
	// Rand is the source of serial numbers and the join secret (nil: crypto/rand). Key generation
	// may draw from crypto/rand regardless (Go ignores custom readers there).
	Rand io.Reader
}

// Init makes a certificate directory for one cluster: a CA (ECDSA P-256, ca.crt + ca.key), one
// node certificate signed by it for server and client use (node.crt + node.key) and a random join
// secret (32 bytes, hex). dir is created (0700) if needed; files are created 0600 and never
// overwritten: if any of them exists, Init writes nothing and returns ErrExists naming it. It
// returns the paths written. Bad hosts or days return ErrBadOption.
func Init(dir string, o InitOptions) ([]string, error) {
	if o.Days == 0 {
		o.Days = 365
	}
	if o.Days < 0 || o.Days > 100*365 {
		return nil, fmt.Errorf("%w: --days %d: want 1..%d", ErrBadOption, o.Days, 100*365)
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	dns, ips, err := nodeNames(o.Hosts)
	if err != nil {
		return nil, err
	}

	paths, err := absentPaths(dir, CAFile, CAKeyFile, CertFile, KeyFile, SecretFile)
	if err != nil {
		return nil, err
	}

	notBefore := o.Now.Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := o.Now.Add(time.Duration(o.Days) * 24 * time.Hour).UTC().Truncate(time.Second)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), o.Rand)
	if err != nil {
		return nil, fmt.Errorf("tlsauth: CA key: %w", err)
	}
	caSerial, err := serial(o.Rand)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "ddpm cluster CA", Organization: []string{"ddpm"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(o.Rand, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsauth: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("tlsauth: CA certificate: %w", err)
	}
	nodeCert, nodeKey, err := newNodeCert(o.Rand, ca, caKey, notBefore, notAfter, dns, ips, RoleNone)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return nil, fmt.Errorf("tlsauth: CA key: %w", err)
	}
	secret := make([]byte, 32)
	if _, err := io.ReadFull(o.Rand, secret); err != nil {
		return nil, fmt.Errorf("tlsauth: join secret: %w", err)
	}

	contents := [][]byte{
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKeyDER}),
		nodeCert,
		nodeKey,
		[]byte(hex.EncodeToString(secret) + "\n"),
	}
	if err := writeAllNew(dir, paths, contents); err != nil {
		return nil, err
	}
	return paths, nil
}

// absentPaths joins each of names to dir, and refuses them all with ErrExists naming the first
// that exists already (a file, a directory or a link): Init and Issue write nothing then. Errors:
// ErrExists, or the file system's (wrapped, naming the path) when one cannot be looked up.
func absentPaths(dir string, names ...string) ([]string, error) {
	paths := make([]string, len(names))
	for i, n := range names {
		paths[i] = filepath.Join(dir, n)
		if _, err := os.Lstat(paths[i]); err == nil {
			return nil, fmt.Errorf("%w: %s already exists (remove it or choose another directory)", ErrExists, paths[i])
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tlsauth: %w", err)
		}
	}
	return paths, nil
}

// newNodeCert makes a node certificate signed by ca (key caKey) for server and client use:
// a new ECDSA P-256 key, a serial from rnd, subject NodeName, valid notBefore..notAfter, for the
// names dns and ips, carrying role as the URI "ddpm:role/ROLE" unless it is RoleNone. It returns
// the certificate and its key as PEM (CERTIFICATE; PRIVATE KEY, PKCS#8). rnd is read in the
// order key, serial, signature, so that a fixed reader gives the same files.
func newNodeCert(rnd io.Reader, ca *x509.Certificate, caKey crypto.Signer, notBefore, notAfter time.Time, dns []string, ips []net.IP, role Role) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsauth: node key: %w", err)
	}
	sn, err := serial(rnd)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: NodeName, Organization: []string{"ddpm"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	if role != RoleNone {
		tmpl.URIs = []*url.URL{{Scheme: "ddpm", Opaque: "role/" + string(role)}}
	}
	der, err := x509.CreateCertificate(rnd, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsauth: node certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsauth: node key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// writeAllNew creates dir (0700) if needed and writes contents[i] to paths[i] with writeNew, in
// order; on a failure it removes the files it wrote, leaving no half-made directory. Errors:
// ErrExists naming a path another writer took meanwhile, or the file system's naming the path.
func writeAllNew(dir string, paths []string, contents [][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsauth: %w", err)
	}
	for i, p := range paths {
		if err := writeNew(p, contents[i]); err != nil {
			for _, q := range paths[:i] {
				os.Remove(q)
			}
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w: %s already exists (remove it or choose another directory)", ErrExists, p)
			}
			return fmt.Errorf("tlsauth: write %s: %w", p, err)
		}
	}
	return nil
}

// writeNew creates p with mode 0600 (less the umask) holding data, failing with an error for
// which errors.Is(err, fs.ErrExist) holds if p exists (no race with another writer). p appears
// complete or not at all (atomicfile: a temporary file, synced, hard-linked into place, the
// directory synced): a failed write or a crash no longer leaves a half-written key behind, which
// the next `certs init` refused as existing.
func writeNew(p string, data []byte) error {
	return atomicfile.WriteBytes(p, 0o600, atomicfile.NoReplace, data)
}

// nodeNames returns the DNS names and IP addresses of a node certificate: NodeName, localhost,
// 127.0.0.1 and ::1, then each of hosts (an IP address, or a DNS name checked by checkDNSName and
// lowered; blank entries skipped). A bad name returns ErrBadOption.
func nodeNames(hosts []string) ([]string, []net.IP, error) {
	dns := []string{NodeName, "localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		dns = append(dns, strings.ToLower(h))
	}
	return dns, ips, nil
}

// serial returns a random positive 127-bit certificate serial number (RFC 5280 allows 20 octets).
func serial(r io.Reader) (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("tlsauth: serial number: %w", err)
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, never negative
	return new(big.Int).SetBytes(b), nil
}

// checkDNSName accepts an RFC 1123 host name, optionally with a leading "*." wildcard label.
func checkDNSName(h string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: host %q: %s", ErrBadOption, h, why)
	}
	if strings.Contains(h, ":") {
		return bad("give a host name or IP without a port")
	}
	if len(h) > 253 {
		return bad("longer than 253 characters")
	}
	name := strings.TrimPrefix(h, "*.")
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return bad("empty or over-long label")
		}
		for i, r := range label {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(label)-1
			if !ok {
				return bad(fmt.Sprintf("character %q not allowed in a DNS name", r))
			}
		}
	}
	return nil
}
