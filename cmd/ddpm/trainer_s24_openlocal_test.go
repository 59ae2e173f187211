package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestOpenDamagedVolumeSaysLocalResume: a cluster trainer whose volume is a ddpm local run's
// trainer folder (RUN/trainer-1 beside RUN/local.json) and whose checkpoint file is not a bbolt
// file, while its coordinators do not answer, exits with status 1 and one line ending with the
// way on under ddpm local: "resume the run (ddpm local --resume RUN) once they answer" (since
// stop 25 the trainer moves a damaged file aside itself when another trainer holds the run's
// newest committed checkpoint). It said "start the trainer again", which ddpm local does by
// itself until its restarts are spent, onto the same file.
func TestOpenDamagedVolumeSaysLocalResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	vol := localrun.TrainerDir(runDir, 1)
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, localrun.ManifestFile), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(vol, trainer.CheckpointFile)
	if err := os.WriteFile(db, []byte(strings.Repeat("not a database\n", 2000)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, cfg := procRun(t, dir, 16, 1, 1, 2*time.Second, nil)
	coord := freeAddr(t) // nothing listens: the coordinators do not answer
	p := launchTrainer(t, bin, vol, "t1", freeAddr(t), coord, cfg, tlsauthtest.Dir(t))
	select {
	case <-p.exited:
	case <-time.After(time.Minute):
		t.Fatalf("the trainer did not exit within a minute (log %s)", p.log)
	}
	want := "ddpm: checkpoint: " + db + " is not a readable checkpoint file (invalid database): corrupt checkpoint; it was left as it is: the coordinators (" + coord +
		") did not answer within 10s, so whether another trainer holds the run's newest committed checkpoint is not known; resume the run (ddpm local --resume " +
		runDir + ") once they answer (it moves the file aside itself when one does)\n"
	var ee *exec.ExitError
	if !errors.As(p.err, &ee) || ee.ExitCode() != 1 || p.stderr.String() != want {
		t.Fatalf("trainer on a damaged volume of a ddpm local run: %v, stderr\n%q\nwant status 1 and\n%q", p.err, p.stderr.String(), want)
	}
}
