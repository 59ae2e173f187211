package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
)

// TestLocalS24ResumeRoleCerts: `ddpm local --resume RUN` whose RUN/certs holds a certificate of
// one role (made by ddpm certs issue, copied over the run's own) is refused before any process
// starts, in one line naming the role and the way out, exit 2, nothing changed. It started the
// run: with 3 coordinators on a trainer certificate their raft links were refused and nothing
// came on the terminal, with 1 the coordinator served on a trainer's certificate.
func TestLocalS24ResumeRoleCerts(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.MinTrainers = 1 })
	certs := filepath.Join(run, localrun.CertsDir)
	issued := filepath.Join(t.TempDir(), "trainer-certs")
	if _, err := tlsauth.Issue(certs, issued, tlsauth.IssueOptions{Role: tlsauth.RoleTrainer}); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(certs); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(issued, certs); err != nil {
		t.Fatal(err)
	}
	before := treeTimes(t, run)
	wantOneLine(t, runLocalCmd(t, "--resume", run, "--quiet"), 2, fmt.Sprintf("ddpm: %s holds a certificate of role trainer (made by ddpm certs issue): ddpm local runs every process on this one directory and needs the role-less one ddpm certs init makes; restore it, or remove %s and make new ones with: ddpm certs init %s", certs, certs, certs))
	if after := treeTimes(t, run); !slices.Equal(before, after) {
		t.Errorf("the refused resume changed the run folder:\nbefore %q\nafter  %q", before, after)
	}
}
