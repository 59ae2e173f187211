package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"ddpm/internal/tlsauth"
)

// runCAPool is the pool of the CA in the certificate directory certs (certs/ca.crt, made by
// ddpm certs init), for a test's HTTPS client of a process serving with --http-tls.
func runCAPool(t *testing.T, certs string) *x509.CertPool {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(certs, tlsauth.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no PEM certificate", filepath.Join(certs, tlsauth.CAFile))
	}
	return pool
}
