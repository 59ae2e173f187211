package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestFingerprintFaultOutlivesKeptCheckpoints: t1 holds other data than the run's; it leaves at
// its first load (exit 2) and records the committed checkpoint it met. t0 trains on alone and
// commits more than keep_checkpoints (2) checkpoints after it, so the recorded one falls off the
// coordinators' list; nothing was rolled back, the run's data is what it was. t1 restarted onto
// the same data must not join: exit 2, the first line ending with how to join anyway, the
// generation still t0's. (Judging the record stale once its checkpoint left the list, t1 joined,
// started a generation and left it again.) Then the operator's real fix of a run started on the
// wrong data: t0 gets t1's data and the run is rolled back to step 0; t0 trains again from
// scratch. The recorded checkpoint is now abandoned, the record stale: t1 restarted joins, the
// ring of both commits, and the record is gone.
func TestFingerprintFaultOutlivesKeptCheckpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0)
	otherData(t, n1)
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep"; r.KeepCheckpoints = 2 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	vol0, l0 := filepath.Join(dir, "t0-vol"), freeAddr(t)
	t0 := launchTrainerIn(t, n0, bin, vol0, "t0", l0, coord, cfg, certs)
	waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	vol1, l1 := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainerIn(t, n1, bin, vol1, "t1", l1, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		t.Fatalf("t1, on other data, did not exit within 2 minutes (log %s)", t1.log)
	}
	line := t1.stderr.String()
	var ee *exec.ExitError
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 2 || !strings.Contains(line, "was trained on data of fingerprint") || strings.Count(line, "\n") != 1 {
		t.Fatalf("t1 exited with %v and stderr %q; want status 2 and one line about the fingerprint", t1.err, line)
	}
	f, err := trainer.LoadFault(vol1)
	if err != nil || f == nil || f.Kind != trainer.FaultData || f.Fingerprint == "" || f.Checkpoint <= 0 {
		t.Fatalf("t1's record: %+v, %v; want a fingerprint fault", f, err)
	}
	alone := waitFor(t, cli, "t0 alone, its recorded checkpoint off the list", 3*time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1 && len(s.Checkpoints) > 0 && s.Checkpoints[0].Step > f.Checkpoint
	})
	t.Logf("listed checkpoints %v; the record's step %d", alone.Checkpoints, f.Checkpoint)

	t1 = launchTrainerIn(t, n1, bin, vol1, "t1", l1, coord, cfg, certs)
	again := strings.TrimSuffix(line, "\n") + "; or remove " + filepath.Join(vol1, trainer.FaultFile) + " to join anyway\n"
	expectNoJoin(t, cli, "t1 restarted on the same data", "t1", t1, 2, again, alone.Generation.Number, lastCommitted(alone))

	// The fix: t0 gets t1's data and the run starts over from step 0.
	stopTrainer(t, "t0", t0)
	if err := os.RemoveAll(filepath.Join(n0, "prep")); err != nil {
		t.Fatal(err)
	}
	otherData(t, n0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	gen, err := cli.RollbackRun(ctx, 0)
	cancel()
	if err != nil {
		t.Fatalf("rollback to 0: %v", err)
	}
	t0 = launchTrainerIn(t, n0, bin, vol0, "t0", l0, coord, cfg, certs)
	st := waitFor(t, cli, "t0 alone after the rollback", 2*time.Minute, func(s *fsm.State) bool {
		return s.Members["t0"] != nil && s.Generation.World == 1 && s.Generation.Number >= gen
	})
	commitIn(t, cli, "a commit by t0 on the new data", st.Generation.Number)
	t1 = launchTrainerIn(t, n1, bin, vol1, "t1", l1, coord, cfg, certs)
	backInRing(t, cli, "t1")
	if _, err := os.Stat(filepath.Join(vol1, trainer.FaultFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("t1's stale record is still there (%v)", err)
	}
	stopTrainer(t, "t1", t1)
	stopTrainer(t, "t0", t0)
}

// TestFaultLineageEvidence: lineageHolds keeps a fingerprint record (of step 8, sha256 "a") while
// the coordinators' state gives no evidence that the run's line moved away from it, also once it
// fell off the listed newest keep_checkpoints; it drops it on each kind of evidence of a rollback
// past it.
func TestFaultLineageEvidence(t *testing.T) {
	ck := func(steps ...int64) []fsm.Checkpoint {
		var out []fsm.Checkpoint
		for _, s := range steps {
			out = append(out, fsm.Checkpoint{Step: s, SHA256: "x"})
		}
		return out
	}
	for _, c := range []struct {
		name string
		st   fsm.State
		want bool
	}{
		{"listed", fsm.State{Checkpoints: []fsm.Checkpoint{{Step: 4, SHA256: "x"}, {Step: 8, SHA256: "a"}}}, true},
		{"fell off the list, nothing rolled back", fsm.State{Checkpoints: ck(12, 16)}, true},
		{"fell off, a rollback abandoned other steps", fsm.State{Checkpoints: ck(12, 16),
			Abandoned: []fsm.AbandonedCheckpoint{{Checkpoint: fsm.Checkpoint{Step: 8, SHA256: "b"}, RolledBackTo: 4}}}, true},
		{"fell off, recommitted at a forgotten step", fsm.State{Checkpoints: ck(12, 16),
			AbandonedRanges: []fsm.StepRange{{Above: 4, UpTo: 8}}, Recommitted: []fsm.Held{{Step: 8, SHA256: "a"}}}, true},
		{"another commit at its step", fsm.State{Checkpoints: []fsm.Checkpoint{{Step: 8, SHA256: "b"}, {Step: 12, SHA256: "x"}}}, false},
		{"another recommit at its step", fsm.State{Checkpoints: ck(12, 16), Recommitted: []fsm.Held{{Step: 8, SHA256: "b"}}}, false},
		{"no commit at all", fsm.State{}, false},
		{"rolled back below it", fsm.State{Checkpoints: ck(4)}, false},
		{"abandoned", fsm.State{Checkpoints: ck(12, 16),
			Abandoned: []fsm.AbandonedCheckpoint{{Checkpoint: fsm.Checkpoint{Step: 8, SHA256: "a"}, RolledBackTo: 0}}}, false},
		{"in the forgotten abandoned steps", fsm.State{Checkpoints: ck(12, 16), AbandonedRanges: []fsm.StepRange{{Above: 4, UpTo: 12}}}, false},
		{"past the forgotten abandoned steps", fsm.State{Checkpoints: ck(12, 16), AbandonedRanges: []fsm.StepRange{{Above: 8, UpTo: 12}}}, true},
	} {
		if got := lineageHolds(&c.st, 8, "a"); got != c.want {
			t.Errorf("%s: lineageHolds = %v, want %v", c.name, got, c.want)
		}
	}
}
