package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/tlsauth"
)

// runCertsIssue runs `ddpm certs issue ARGS...` in-process and returns stdout and the error.
func runCertsIssue(t *testing.T, args ...string) (string, error) {
	t.Helper()
	certsIssueFlags.certs, certsIssueFlags.role, certsIssueFlags.out = "", "", ""
	certsIssueFlags.hosts, certsIssueFlags.days = nil, 0
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetArgs(append([]string{"certs", "issue"}, args...))
	defer rootCmd.SetArgs(nil)
	err := rootCmd.Execute()
	return out.String(), err
}

// TestCertsIssueCommand: `ddpm certs issue --certs DIR --role trainer --out OUT` writes OUT's
// four files (no ca.key), prints them and the loaded mode with the role, and OUT loads as
// --certs with role trainer. A second issue into OUT, a role that does not exist, a missing
// flag, a --certs without ca.key (a node's copy) and --days past the CA's expiry are each one
// line with exit status 2, OUT left as it was and nothing else created.
func TestCertsIssueCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := tlsauth.Init(dir, tlsauth.InitOptions{Days: 10}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "trainer")
	stdout, err := runCertsIssue(t, "--certs", dir, "--role", "trainer", "--out", out, "--hosts", "trainer-0.ddpm.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("output:\n%s", stdout)
	}
	for i, n := range []string{tlsauth.CAFile, tlsauth.CertFile, tlsauth.KeyFile, tlsauth.SecretFile} {
		if want := "wrote " + filepath.Join(out, n); lines[i] != want {
			t.Errorf("line %d %q, want %q", i+1, lines[i], want)
		}
	}
	if !strings.HasPrefix(lines[4], "mutual TLS 1.3 + join secret, role trainer, node certificate valid until ") {
		t.Errorf("last line %q", lines[4])
	}
	b, err := tlsauth.Load(tlsauth.Config{Dir: out})
	if err != nil || b.Role() != tlsauth.RoleTrainer {
		t.Fatalf("issued directory: %v, role %v", err, b.Role())
	}
	if _, err := os.Stat(filepath.Join(out, tlsauth.CAKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("ca.key copied: %v", err)
	}
	cert, _ := os.ReadFile(filepath.Join(out, tlsauth.CertFile))

	fresh := filepath.Join(t.TempDir(), "x")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--certs", dir, "--role", "operator", "--out", out},
			"certs issue: " + filepath.Join(out, tlsauth.CAFile) + " already exists (remove it or choose another directory)"},
		{[]string{"--certs", dir, "--role", "admin", "--out", fresh},
			`certs issue: --role "admin": want coordinator, trainer or operator`},
		{[]string{"--certs", dir, "--out", fresh},
			"certs issue: --role is required (coordinator, trainer or operator)"},
		{[]string{"--role", "operator", "--out", fresh},
			"certs issue: --certs DIR is required (the directory ddpm certs init made, holding ca.key)"},
		{[]string{"--certs", dir, "--role", "operator"},
			"certs issue: --out DIR2 is required (a new or empty directory for the role's certificate)"},
		{[]string{"--certs", out, "--role", "operator", "--out", fresh},
			"certs issue: missing file: " + filepath.Join(out, tlsauth.CAKeyFile) + " (issuing takes the CA's key: give the directory ddpm certs init made, not a copy made for the nodes)"},
		{[]string{"--certs", dir, "--role", "operator", "--out", fresh, "--hosts", "h:7000"},
			`certs issue: --hosts "h:7000": give a host name or IP without a port`},
		{[]string{"--certs", dir, "--role", "operator", "--out", fresh, "--days", "-1"},
			"certs issue: --days -1: want 1..36500, or 0 for the CA's own expiry"},
		{[]string{"--certs", filepath.Join(dir, tlsauth.CAFile), "--role", "operator", "--out", fresh},
			"certs issue: --certs " + filepath.Join(dir, tlsauth.CAFile) + ": a file, not a directory (give the directory ddpm certs init made)"},
		{[]string{"--certs", dir, "--role", "operator", "--out", "/proc/ddpm-certs"},
			"certs issue: --out /proc/ddpm-certs: cannot write there (mkdir /proc/ddpm-certs: no such file or directory)"},
	} {
		_, err := runCertsIssue(t, tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%q: %v, want exit 2 %q", tc.args, err, tc.want)
		}
		if _, serr := os.Stat(fresh); !os.IsNotExist(serr) {
			t.Fatalf("%q: %s created", tc.args, fresh)
		}
	}
	// --days past the CA's (10 days) expiry: the line names the days left.
	_, err = runCertsIssue(t, "--certs", dir, "--role", "operator", "--out", fresh, "--days", "11")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !errors.Is(err, tlsauth.ErrBadOption) ||
		!strings.HasPrefix(err.Error(), "certs issue: --days 11: the CA of "+dir+" expires at ") ||
		!strings.HasSuffix(err.Error(), ", in 9 days; give --days 9 or less, or leave --days out (the CA's expiry)") {
		t.Errorf("--days 11: %v", err)
	}
	if again, _ := os.ReadFile(filepath.Join(out, tlsauth.CertFile)); !bytes.Equal(cert, again) {
		t.Error("node.crt of the issued directory overwritten")
	}
}

// TestCertRoleFor: a coordinator refuses a trainer's certificate directory at start-up, and a
// trainer an operator's, each in one line with exit status 2; their own role, a certificate
// without a role and --insecure pass.
func TestCertRoleFor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := tlsauth.Init(dir, tlsauth.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	bundle := func(r tlsauth.Role) (*tlsauth.Bundle, string) {
		if r == tlsauth.RoleNone {
			b, err := tlsauth.Load(tlsauth.Config{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			return b, dir
		}
		out := filepath.Join(t.TempDir(), string(r))
		if _, err := runCertsIssue(t, "--certs", dir, "--role", string(r), "--out", out); err != nil {
			t.Fatal(err)
		}
		b, err := tlsauth.Load(tlsauth.Config{Dir: out})
		if err != nil {
			t.Fatal(err)
		}
		return b, out
	}
	for _, tc := range []struct {
		process string
		want    tlsauth.Role
		have    tlsauth.Role
		refused bool
	}{
		{"coordinator", tlsauth.RoleCoordinator, tlsauth.RoleTrainer, true},
		{"coordinator", tlsauth.RoleCoordinator, tlsauth.RoleOperator, true},
		{"coordinator", tlsauth.RoleCoordinator, tlsauth.RoleCoordinator, false},
		{"coordinator", tlsauth.RoleCoordinator, tlsauth.RoleNone, false},
		{"trainer", tlsauth.RoleTrainer, tlsauth.RoleOperator, true},
		{"trainer", tlsauth.RoleTrainer, tlsauth.RoleCoordinator, true},
		{"trainer", tlsauth.RoleTrainer, tlsauth.RoleTrainer, false},
	} {
		b, d := bundle(tc.have)
		err := certRoleFor(b, tc.process, tc.want, d)
		want := ""
		if tc.refused {
			want = tc.process + ": --certs " + d + " holds a certificate of role " + string(tc.have) + "; a " + tc.process +
				" takes one of role " + string(tc.want) + " (ddpm certs issue --role " + string(tc.want) + ") or the role-less one of ddpm certs init"
		}
		var ee *exitError
		switch {
		case want == "" && err != nil:
			t.Errorf("%s with %s: %v", tc.process, tc.have, err)
		case want != "" && (!errors.As(err, &ee) || ee.code != 2 || err.Error() != want):
			t.Errorf("%s with %s: %v\nwant exit 2 %q", tc.process, tc.have, err, want)
		}
	}
	ib, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := certRoleFor(ib, "trainer", tlsauth.RoleTrainer, ""); err != nil {
		t.Errorf("--insecure: %v", err)
	}
}

// TestCoordinatorRefusesOtherRoleCertificate: ddpm coordinator given a trainer's certificate
// directory stops before it opens anything, in one line with exit status 2 (it used to start,
// be refused by the other replicas' raft ports, and serve its gRPC port under a trainer's
// certificate); its --data-dir is not created.
func TestCoordinatorRefusesOtherRoleCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if _, err := tlsauth.Init(dir, tlsauth.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	trainerDir := filepath.Join(t.TempDir(), "trainer")
	if _, err := tlsauth.Issue(dir, trainerDir, tlsauth.IssueOptions{Role: tlsauth.RoleTrainer}); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"coordinator", "--id", "c0", "--peers", "c0=127.0.0.1:0=127.0.0.1:0", "--raft-addr", "127.0.0.1:0",
		"--grpc-addr", "127.0.0.1:0", "--bootstrap", "--data-dir", data, "--preset", "mnist", "--certs", trainerDir}
	done := make(chan error, 1)
	go func() {
		_, err := runCLI(t, context.Background(), nil, args...)
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("ddpm coordinator with a trainer's certificate still runs after 15 s: it started")
	}
	wantExit(t, args, err, 2, "coordinator: --certs "+trainerDir+" holds a certificate of role trainer; a coordinator takes one of role coordinator (ddpm certs issue --role coordinator) or the role-less one of ddpm certs init")
	if _, serr := os.Stat(data); !os.IsNotExist(serr) {
		t.Errorf("--data-dir %s created (%v)", data, serr)
	}
}

// TestCertsPermissionWords: a directory's mode bits refusing us (EACCES) keep the hint to give
// another directory; any other refusal (EPERM: a file system that makes no hard links, an
// immutable file) is named in the system's own words, for certs init and certs issue alike. Both
// used to say "permission denied (give a directory this user may create and write)".
func TestCertsPermissionWords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	ca := filepath.Join(dir, tlsauth.CAFile)
	linkErr := fmt.Errorf("tlsauth: write %s: %w", ca, &os.LinkError{Op: "link", Old: filepath.Join(dir, ".ca.crt.tmp1"), New: ca, Err: syscall.EPERM})
	mkdirErr := fmt.Errorf("tlsauth: %w", &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.EACCES})
	for _, tc := range []struct {
		got  error
		want string
	}{
		{certsInitError(dir, linkErr), "certs init " + dir + ": link " + filepath.Join(dir, ".ca.crt.tmp1") + " " + ca + ": operation not permitted"},
		{certsInitError(dir, mkdirErr), "certs init " + dir + ": permission denied (give a directory this user may create and write)"},
		{certsIssueError("src", dir, linkErr), "certs issue: --out " + dir + ": link " + filepath.Join(dir, ".ca.crt.tmp1") + " " + ca + ": operation not permitted"},
		{certsIssueError("src", dir, mkdirErr), "certs issue: --out " + dir + ": permission denied (give a directory this user may create and write)"},
	} {
		if tc.got.Error() != tc.want || !errors.Is(tc.got, os.ErrPermission) {
			t.Errorf("%v\nwant %q", tc.got, tc.want)
		}
	}
}
