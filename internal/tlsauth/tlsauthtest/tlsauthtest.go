// Package tlsauthtest makes certificate directories and loaded Bundles for the tests of the
// packages that wire tlsauth in (coordinator, allreduce, checkpoint, trainer): a cluster's own
// material, a foreign CA's, and the cluster's certificates with another join secret.
package tlsauthtest

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ddpm/internal/tlsauth"
)

// Log is a goroutine-safe buffer for a Bundle's refusal log lines.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Wait fails t unless every want appears in the log within 5 s, and returns the log.
func (l *Log) Wait(t testing.TB, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := l.String()
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(s, w)
		}
		if ok {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", want, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Dir makes a fresh certificate directory (tlsauth.Init) under t.TempDir.
func Dir(t testing.TB, hosts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := tlsauth.Init(dir, tlsauth.InitOptions{Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// WrongSecret copies dir's CA and node certificate into a new directory with a different join
// secret: a process holding it passes TLS but not the join-secret check.
func WrongSecret(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "wrong-secret")
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{tlsauth.CAFile, tlsauth.CertFile, tlsauth.KeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(out, tlsauth.SecretFile), []byte("not-the-secret-of-this-cluster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// Load loads dir the way the commands do (ServerName tlsauth.NodeName); refusals are logged to
// log when it is not nil.
func Load(t testing.TB, dir string, log *Log) *tlsauth.Bundle {
	t.Helper()
	cfg := tlsauth.Config{Dir: dir, ServerName: tlsauth.NodeName}
	if log != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(log, nil))
	}
	b, err := tlsauth.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Insecure returns the explicit plain-text Bundle.
func Insecure(t testing.TB) *tlsauth.Bundle {
	t.Helper()
	b, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Issue makes a certificate directory of one role from the CA of dir (tlsauth.Issue, as `ddpm
// certs issue` does) under t.TempDir and returns it; dir's own certificate has no role.
func Issue(t testing.TB, dir string, role tlsauth.Role) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "certs-"+string(role))
	if _, err := tlsauth.Issue(dir, out, tlsauth.IssueOptions{Role: role}); err != nil {
		t.Fatal(err)
	}
	return out
}
