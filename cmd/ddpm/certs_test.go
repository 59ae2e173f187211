package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/internal/tlsauth"
)

// runCerts runs `ddpm certs init ARGS...` in-process and returns stdout and the error.
func runCerts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	certsInitFlags.hosts, certsInitFlags.days = nil, 365
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetArgs(append([]string{"certs", "init"}, args...))
	defer rootCmd.SetArgs(nil)
	err := rootCmd.Execute()
	return out.String(), err
}

func TestCertsInitCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := runCerts(t, dir, "--hosts", "coord-0.ddpm.default.svc,10.0.0.7", "--days", "10")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{tlsauth.CAFile, tlsauth.CAKeyFile, tlsauth.CertFile, tlsauth.KeyFile, tlsauth.SecretFile} {
		if !strings.Contains(out, "wrote "+filepath.Join(dir, n)+"\n") {
			t.Errorf("output lacks %s:\n%s", n, out)
		}
	}
	if !strings.Contains(out, "mutual TLS 1.3 + join secret") {
		t.Errorf("output: %s", out)
	}
	if _, err := tlsauth.Load(tlsauth.Config{Dir: dir}); err != nil {
		t.Fatalf("the directory made does not load: %v", err)
	}
	secret, _ := os.ReadFile(filepath.Join(dir, tlsauth.SecretFile))

	_, err = runCerts(t, dir)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !errors.Is(err, tlsauth.ErrExists) {
		t.Fatalf("second init: %v, want exit 2 with ErrExists", err)
	}
	if want := "certs init: " + filepath.Join(dir, tlsauth.CAFile) + " already exists (remove it or choose another directory)"; err.Error() != want {
		t.Errorf("second init says %q, want %q", err, want)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, tlsauth.SecretFile)); !bytes.Equal(secret, again) {
		t.Error("join-secret overwritten")
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--days", "0"}, "--days 0: want 1..36500"},
		{[]string{"--days", "40000"}, "--days 40000: want 1..36500"},
		{[]string{"--hosts", "host:7000"}, `--hosts "host:7000": give a host name or IP without a port`},
		{[]string{"--hosts", "bad host"}, `--hosts "bad host": character ' ' not allowed in a DNS name`},
	} {
		d := filepath.Join(t.TempDir(), "x")
		_, err := runCerts(t, append([]string{d}, tc.args...)...)
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%v: %v, want exit 2 %q", tc.args, err, tc.want)
		}
		if _, serr := os.Stat(d); !os.IsNotExist(serr) {
			t.Errorf("%v: %s created", tc.args, d)
		}
	}

	// DIR a file (a run.yaml given by mistake): one line naming it, the file left as it was. It
	// was "tlsauth: lstat F/ca.crt: not a directory".
	file := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(file, []byte("preset: mnist\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runCerts(t, file)
	if want := "certs init " + file + ": a file, not a directory (give a new or empty directory to make the certificates in)"; !errors.As(err, &ee) || ee.code != 2 || err.Error() != want {
		t.Errorf("certs init FILE: %v, want exit 2 %q", err, want)
	}
	if b, _ := os.ReadFile(file); string(b) != "preset: mnist\n" {
		t.Errorf("certs init FILE changed it: %q", b)
	}
}
