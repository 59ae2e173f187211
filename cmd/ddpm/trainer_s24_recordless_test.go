package main

import (
	"fmt"
	"os"
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

// TestRecordlessDataFaultRestartDoesNotJoin: t1's volume holds the record of a data fault that
// names no record of the dataset and no checkpoint (what trainer.FaultOf writes for an ErrData
// that names neither), and t1's copy of the run's data has a bit flipped in its shard. Started,
// t1 reads every record before it joins, meets the damaged shard, and exits with status 2 and the
// line a step reading that shard gives, ending with how to join anyway, without joining: t0's
// generation is unchanged and t0 commits on in it; the record now names the record that failed
// (0), so the next restart reads that one. Before, such a record was not checked: t1 joined,
// started a generation, failed its first step and left again.
func TestRecordlessDataFaultRestartDoesNotJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0, n1)
	_, was, now := damageShard(t, filepath.Join(n1, "prep", "shard-00000.bin"))
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	st := waitFor(t, cli, "t0's first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })

	vol := filepath.Join(dir, "t1-vol")
	f := trainer.Fault{Kind: trainer.FaultData, Config: run.Hash(), Err: "trainer: the dataset cannot be read: a record this trainer could not name", Record: -1}
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := trainer.SaveFault(vol, f); err != nil {
		t.Fatal(err)
	}
	t1 := launchTrainerIn(t, n1, bin, vol, "t1", freeAddr(t), coord, cfg, certs)
	want := fmt.Sprintf("ddpm: trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect prep checks every shard) and start the trainer again; "+
		"or remove %s to join anyway\n", filepath.Join("prep", "shard-00000.bin"), now, was, filepath.Join(vol, trainer.FaultFile))
	expectNoJoin(t, cli, "t1", "t1", t1, 2, want, st.Generation.Number, lastCommitted(st))
	rec, err := trainer.LoadFault(vol)
	if err != nil || rec == nil || rec.Record != 0 || rec.Kind != trainer.FaultData || !strings.HasSuffix(rec.Err, "could not name") {
		t.Fatalf("t1's record after the check: %+v, %v; want it narrowed to record 0", rec, err)
	}
	stopTrainer(t, "t0", t0)
}
