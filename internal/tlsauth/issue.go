package tlsauth

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// IssueOptions configures Issue.
type IssueOptions struct {
	// Role is the role the new certificate carries (required; RoleNone is refused: Init's
	// certificate already is the one without a role).
	Role Role
	// Hosts are extra names for the certificate, as InitOptions.Hosts; localhost, 127.0.0.1, ::1
	// and NodeName are always included.
	Hosts []string
	// Days is the validity in days (0: until the CA expires). A validity past the CA's expiry is
	// refused.
	Days int
	// Now is the start of validity (zero: the current time); the certificate is valid from one
	// hour before it.
	Now time.Time
	// Rand is the source of the serial number (nil: crypto/rand).
	Rand io.Reader
}

// Issue makes a certificate directory for one role from the CA of the directory src (made by
// Init: ca.crt, ca.key and join-secret are read; node.crt and node.key are not needed) into dst:
//
//	ca.crt       copied from src
//	node.crt     a new certificate (ECDSA P-256) for server and client use, signed by the CA,
//	             carrying o.Role as the URI "ddpm:role/ROLE" (see Role)
//	node.key     its private key (PEM, PKCS#8)
//	join-secret  copied from src
//
// dst takes --certs like src, and never receives ca.key. dst is created (0700) if needed; files
// are created 0600 and never overwritten: if any of them exists (dst = src, for one), Issue writes
// nothing and returns ErrExists naming it. It returns the paths written. Errors: ErrBadOption (a
// bad role, host or validity), ErrMissing (a file of src absent; ca.key above all: a directory
// copied to the nodes holds none), ErrInvalid (ca.crt not a CA, ca.key not its key, the CA
// expired, a bad join secret), each naming the file.
func Issue(src, dst string, o IssueOptions) ([]string, error) {
	if !slices.Contains(Roles, o.Role) {
		_, err := ParseRole(string(o.Role))
		return nil, err
	}
	if o.Days < 0 || o.Days > 100*365 {
		return nil, fmt.Errorf("%w: --days %d: want 1..%d, or 0 for the CA's own expiry", ErrBadOption, o.Days, 100*365)
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
	ca, caKey, caPEM, err := readCA(src)
	if err != nil {
		return nil, err
	}
	secretPath := filepath.Join(src, SecretFile)
	secretRaw, err := os.ReadFile(secretPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrMissing, secretPath)
	} else if err != nil {
		return nil, fmt.Errorf("tlsauth: read %s: %w", secretPath, err)
	}
	secret, err := parseSecret(secretPath, secretRaw)
	if err != nil {
		return nil, err
	}

	notBefore := o.Now.Add(-time.Hour).UTC().Truncate(time.Second)
	notAfter := ca.NotAfter
	if !o.Now.Before(ca.NotAfter) {
		return nil, fmt.Errorf("%w: %s expired at %s (make a new directory with ddpm certs init)", ErrInvalid, filepath.Join(src, CAFile), ca.NotAfter.UTC().Format(time.RFC3339))
	}
	if o.Days > 0 {
		notAfter = o.Now.Add(time.Duration(o.Days) * 24 * time.Hour).UTC().Truncate(time.Second)
		if notAfter.After(ca.NotAfter) {
			left := int(ca.NotAfter.Sub(o.Now) / (24 * time.Hour))
			if left < 1 {
				return nil, fmt.Errorf("%w: --days %d: the CA of %s expires at %s, in less than a day; leave --days out (the CA's expiry), or make a new directory with ddpm certs init",
					ErrBadOption, o.Days, src, ca.NotAfter.UTC().Format(time.RFC3339))
			}
			return nil, fmt.Errorf("%w: --days %d: the CA of %s expires at %s, in %d days; give --days %d or less, or leave --days out (the CA's expiry)",
				ErrBadOption, o.Days, src, ca.NotAfter.UTC().Format(time.RFC3339), left, left)
		}
	}

	paths, err := absentPaths(dst, CAFile, CertFile, KeyFile, SecretFile)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := newNodeCert(o.Rand, ca, caKey, notBefore, notAfter, dns, ips, o.Role)
	if err != nil {
		return nil, err
	}
	contents := [][]byte{caPEM, certPEM, keyPEM, []byte(secret + "\n")}
	if err := writeAllNew(dst, paths, contents); err != nil {
		return nil, err
	}
	return paths, nil
}

// readCA reads the CA of the directory dir: ca.crt (a CA certificate; its PEM is returned as it
// is, to be copied) and ca.key (its private key). Errors wrap ErrMissing or ErrInvalid and name
// the file.
func readCA(dir string) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	read := func(p, hint string) ([]byte, error) {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s%s", ErrMissing, p, hint)
		}
		if err != nil {
			return nil, fmt.Errorf("tlsauth: read %s: %w", p, err)
		}
		return b, nil
	}
	caPEM, err := read(certPath, "")
	if err != nil {
		return nil, nil, nil, err
	}
	keyPEM, err := read(keyPath, " (issuing takes the CA's key: give the directory ddpm certs init made, not a copy made for the nodes)")
	if err != nil {
		return nil, nil, nil, err
	}
	blk, _ := pem.Decode(caPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, nil, nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalid, certPath)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalid, certPath, err)
	}
	if !ca.IsCA {
		return nil, nil, nil, fmt.Errorf("%w: %s is not a CA certificate", ErrInvalid, certPath)
	}
	kblk, _ := pem.Decode(keyPEM)
	if kblk == nil || kblk.Type != "PRIVATE KEY" {
		return nil, nil, nil, fmt.Errorf("%w: %s holds no PEM private key (PKCS#8)", ErrInvalid, keyPath)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrInvalid, keyPath, err)
	}
	signer, ok := k.(crypto.Signer)
	pub, okPub := ca.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !okPub || !pub.Equal(signer.Public()) {
		return nil, nil, nil, fmt.Errorf("%w: %s is not the key of %s", ErrInvalid, keyPath, certPath)
	}
	return ca, signer, caPEM, nil
}
