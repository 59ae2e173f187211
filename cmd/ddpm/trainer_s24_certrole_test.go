package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerRefusesCoordinatorCertificate: a cluster trainer given the certificate directory of
// a coordinator (ddpm certs issue --role coordinator) exits with status 2 and one line naming the
// directory, its role and the role a trainer takes, before it asks anything of the coordinators
// or makes its --data-dir (review T4: it was refused after the volume was made and opened). It joined (coordinators may call Join), took a
// rank, and every ring link to it was refused (PERMISSION_DENIED): the run stalled on "peer lost"
// (hunk of certs_permission_denied.patch, from "certs").
func TestTrainerRefusesCoordinatorCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	_, cfg := procRun(t, dir, 16, 1, 1, 2*time.Second, nil)
	coordCerts := tlsauthtest.Issue(t, tlsauthtest.Dir(t), tlsauth.RoleCoordinator)
	vol := filepath.Join(dir, "vol")
	// No coordinator listens at the address: the refusal comes first.
	p := launchTrainer(t, bin, vol, "t0", freeAddr(t), freeAddr(t), cfg, coordCerts)
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatalf("the trainer did not exit within a minute (log %s)", p.log)
	}
	want := "ddpm: trainer: --certs " + coordCerts + " holds a certificate of role coordinator; a trainer takes one of role trainer (ddpm certs issue --role trainer) or the role-less one of ddpm certs init\n"
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 2 || p.stderr.String() != want {
		t.Fatalf("trainer with a coordinator's certificate: %v, stderr %q; want status 2 and %q", p.err, p.stderr.String(), want)
	}
	if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused trainer made its --data-dir (%v)", err)
	}
}
