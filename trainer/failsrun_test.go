package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
	"ddpm/dataset"
)

// TestFailsRun: only what every rank meets alike fails the run (a divergence, a committed
// checkpoint of another preset or config); this trainer's data (ErrData) is its own, as its
// volume is. ErrData used to fail the run, so one node's bad disk ended it for every trainer.
func TestFailsRun(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: 5 consecutive steps with non-finite gradients (last step 9)", ErrDiverged), true},
		{fmt.Errorf("%w: checkpoint step 4 holds model preset %q, the run trains %q", ErrMismatch, "tiny", "mnist"), true},
		{fmt.Errorf("%w: %w", ErrData, dataset.ErrIntegrity), false},
		{fmt.Errorf("%w: checkpoint step 4 was trained on data of fingerprint a, this trainer's dataset has b", ErrData), false},
		{fmt.Errorf("%w: %w", ErrVolume, checkpoint.ErrStorage), false},
		{errors.New("trainer: checkpoint step 4: this rank's copy hashes to 0a, the cluster committed 0b"), false},
		{ErrAssignmentsClosed, false},
		{context.Canceled, false},
		{nil, false},
	} {
		if got := FailsRun(tc.err); got != tc.want {
			t.Errorf("FailsRun(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestDamagedShardIsThisTrainers: a trainer on a prepared copy of the run's data whose shard was
// damaged on its disk (one byte flipped: the same index and fingerprint, another sha256) stops
// at its first step with ErrData, one line naming the shard, both sha256s and what to do, and
// FailsRun false: the other trainers' copies are not this one.
func TestDamagedShardIsThisTrainers(t *testing.T) {
	run, _ := mnistRun(t, 4)
	src, err := dataset.Open("mnist:test", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "prep")
	if _, err := dataset.Prepare(src, dir, 0); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(dir, "shard-00000.bin")
	b, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	was := hex.EncodeToString(sum[:])
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(shard, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256(b)
	now := hex.EncodeToString(sum[:])

	run.Dataset = dir
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Fingerprint() != src.Fingerprint() {
		t.Fatalf("the damaged copy's fingerprint %s, its source's %s: the index is the same", ds.Fingerprint(), src.Fingerprint())
	}
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Step(context.Background())
	want := fmt.Sprintf("trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect %s checks every shard) and start the trainer again",
		shard, now, was, dir)
	if !errors.Is(err, ErrData) || !errors.Is(err, dataset.ErrIntegrity) || err.Error() != want {
		t.Fatalf("Step: %v\nwant ErrData and dataset.ErrIntegrity:\n%s", err, want)
	}
	if FailsRun(err) {
		t.Fatalf("FailsRun(%v) = true: one trainer's damaged copy would fail the run", err)
	}
	if tr.StepCount() != 0 {
		t.Fatalf("the failed step counted: StepCount %d", tr.StepCount())
	}
}
