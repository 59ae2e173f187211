package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestFaultStillThereSaysLocalResume: a trainer whose volume is a ddpm local run's trainer
// folder (RUN/trainer-1 beside RUN/local.json, as ddpm local starts its trainers) leaves the run
// on its damaged copy of the data with a line that ends "... and resume the run (ddpm local
// --resume RUN)", exit 2; restarted onto the same copy, its line says the same and "; or remove
// RUN/trainer-1/fault.json to join anyway", exit 2 without joining. Both said "start the trainer
// again", which a ddpm local user does with `ddpm local --resume RUN` (the restart's line until
// stop 23, the first failure's until stop 24).
func TestFaultStillThereSaysLocalResume(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0, n1)
	_, was, now := damageShard(t, filepath.Join(n1, "prep", "shard-00000.bin"))
	runDir := filepath.Join(dir, "run")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, localrun.ManifestFile), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	vol, listen := localrun.TrainerDir(runDir, 1), freeAddr(t)
	first := fmt.Sprintf("ddpm: trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect prep checks every shard) and ",
		filepath.Join("prep", "shard-00000.bin"), now, was)
	t1 := launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	expectDataExit(t, "t1", t1, first+"resume the run (ddpm local --resume "+runDir+")\n")
	alone := waitFor(t, cli, "a generation of t0 alone", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	alone = commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number)

	t1 = launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	again := first + "resume the run (ddpm local --resume " + runDir + "); or remove " + filepath.Join(vol, trainer.FaultFile) + " to join anyway\n"
	expectNoJoin(t, cli, "the restarted t1", "t1", t1, 2, again, alone.Generation.Number, lastCommitted(alone))
	stopTrainer(t, "t0", t0)
}
