package main

import (
	"bytes"
	"os"
	"testing"

	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerS26StandaloneDamagedExit2: a standalone trainer whose checkpoints.db cannot be read
// (its bbolt meta pages zeroed) exits 2, as a cluster trainer whose damaged file may hold its
// run's only copy does, with one line naming the file, that it was left as it is, and what to
// do (restore it, or move it aside to start over); the file is left byte for byte. It exited 1,
// the status of a failure a restart may cure.
func TestTrainerS26StandaloneDamagedExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	vol := t.TempDir()
	db, damaged := damagedEmptyVolumeS25(t, vol)
	want := "ddpm: checkpoint: " + db + " is not a readable checkpoint file (invalid database): corrupt checkpoint; it was left as it is: " +
		"a standalone trainer's volume is its run's only record; restore it from a copy, or move it aside to start the run over from step 0\n"
	runRefused(t, bin, 2, want, "trainer", "--standalone", "--preset", "mnist", "--data-dir", vol)
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, damaged) {
		t.Errorf("the damaged file was changed by the refused trainer (%v)", err)
	}
	if es, _ := os.ReadDir(vol); len(es) != 1 {
		t.Errorf("--data-dir holds %v after the refusal; want only %s", es, trainer.CheckpointFile)
	}
}
