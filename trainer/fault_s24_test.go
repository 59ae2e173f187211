package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/dataset"
)

// TestRecheckRecordlessDataFault: a data fault recorded with neither a record nor a checkpoint
// (FaultOf of an ErrData that names neither) is checked again at a restart by reading every
// record: on a prepared copy of mnist:test in shards of 1.5 MiB whose third shard has one bit
// flipped, Recheck fails at the first record of that shard, with the line
// a step reading it gives (ErrData, naming the shard and both sha256s), and narrows the record in
// the volume to that index; repaired, it passes. Before, such a record was not checked (nil) and
// the restart joined.
func TestRecheckRecordlessDataFault(t *testing.T) {
	run, _ := mnistRun(t, 4)
	src, err := dataset.Open("mnist:test", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "prep")
	idx, err := dataset.Prepare(src, dir, 1<<20+1<<19)
	if err != nil {
		t.Fatal(err)
	}
	first := 2 * idx.PerShard // the first record of the third shard
	shard := filepath.Join(dir, "shard-00002.bin")
	good, err := os.ReadFile(shard)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0x40
	if err := os.WriteFile(shard, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	sum, sumBad := sha256.Sum256(good), sha256.Sum256(bad)
	run.Dataset = dir
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := FaultOf(fmt.Errorf("%w: a record this trainer could not name", ErrData), tr)
	if !ok || f.Kind != FaultData || f.Record != -1 || f.Fingerprint != "" {
		t.Fatalf("FaultOf(an ErrData without a record) = %+v, %v", f, ok)
	}
	vol := t.TempDir()
	if err := SaveFault(vol, f); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("trainer: the dataset cannot be read: integrity check failed: %s: sha256 %s, index.json says %s (corrupted copy?); "+
		"this trainer's copy of the run's data is damaged: copy the data over it again (ddpm dataset inspect %s checks every shard) and start the trainer again",
		shard, hex.EncodeToString(sumBad[:]), hex.EncodeToString(sum[:]), dir)
	start := time.Now()
	err = f.Recheck(context.Background(), tr, ds.Fingerprint(), vol, nil)
	took := time.Since(start)
	if !errors.Is(err, ErrData) || !errors.Is(err, dataset.ErrIntegrity) || err.Error() != want {
		t.Fatalf("Recheck of a data fault without a record: %v\nwant ErrData: %s", err, want)
	}
	t.Logf("read records 0..%d (three shards' sha256) in %v", first, took)
	got, err := LoadFault(vol)
	if err != nil || got == nil || got.Record != first || got.Kind != FaultData || got.Err != f.Err {
		t.Fatalf("the record after Recheck: %+v, %v; want it narrowed to record %d", got, err, first)
	}

	// Repaired (a new process: a reader checks each shard once).
	if err := os.WriteFile(shard, good, 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err = dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr, err = New(run, ds); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := f.Recheck(context.Background(), tr, ds.Fingerprint(), vol, nil); err != nil {
		t.Fatalf("Recheck of the repaired copy: %v", err)
	}
	t.Logf("read all %d records (every shard's sha256) in %v", ds.Len(), time.Since(start))
	// A stop ends the reading with ctx's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Recheck(ctx, tr, ds.Fingerprint(), vol, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recheck stopped: %v, want context.Canceled", err)
	}
}

// TestSaveFaultReserved: ReserveFault writes FaultReserveFile of FaultReserveBytes in a volume
// (again only when its size is wrong); SaveFaultReserved writes a record into it in place (the
// file neither shrinks nor grows: the volume need give it no new block) and renames it to
// FaultFile, which LoadFault reads as the record saved; an error text too long for the reserve
// is cut to fit, ending with "..."; without a reserve it fails with os.ErrNotExist, and a reserve
// too small for any record is an error naming it, the file untouched.
func TestSaveFaultReserved(t *testing.T) {
	vol := t.TempDir()
	if err := SaveFaultReserved(vol, Fault{Kind: FaultVolume}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("SaveFaultReserved without a reserve: %v, want os.ErrNotExist", err)
	}
	res := filepath.Join(vol, FaultReserveFile)
	if err := os.WriteFile(res, []byte("cut short"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ReserveFault(vol); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(res)
	if err != nil || fi.Size() != FaultReserveBytes {
		t.Fatalf("the reserve: %v, %v; want %d bytes", fi, err, FaultReserveBytes)
	}
	f := Fault{Kind: FaultVolume, Config: strings.Repeat("c", 64), Err: "trainer: this trainer's volume: checkpoint: save step 8: no space left on device", Record: -1, Bytes: 3 << 20}
	if err := SaveFaultReserved(vol, f); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadFault(vol); err != nil || got == nil || *got != f {
		t.Fatalf("LoadFault of the reserved record: %+v, %v; want %+v", got, err, f)
	}
	if fi, err := os.Stat(filepath.Join(vol, FaultFile)); err != nil || fi.Size() != FaultReserveBytes {
		t.Fatalf("the record written through the reserve: %v, %v; want the reserve's %d bytes", fi, err, FaultReserveBytes)
	}
	if _, err := os.Stat(res); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the reserve is still there after its use: %v", err)
	}
	// A text longer than the reserve.
	if err := ReserveFault(vol); err != nil {
		t.Fatal(err)
	}
	long := f
	long.Err = strings.Repeat("é<", FaultReserveBytes)
	if err := SaveFaultReserved(vol, long); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFault(vol)
	if err != nil || got == nil || !strings.HasSuffix(got.Err, "...") || !strings.HasPrefix(long.Err, strings.TrimSuffix(got.Err, "...")) || got.Bytes != f.Bytes || got.Kind != f.Kind {
		t.Fatalf("LoadFault of a record with a long text: %+v, %v", got, err)
	}
	// A reserve too small for any record (not one ReserveFault wrote) is an error, left as it is.
	if err := os.WriteFile(res, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SaveFaultReserved(vol, long); err == nil || !strings.HasPrefix(err.Error(), res+": 10 bytes, too small for a fault record of ") {
		t.Fatalf("SaveFaultReserved into a 10-byte reserve: %v", err)
	}
	if b, err := os.ReadFile(res); err != nil || string(b) != "0123456789" {
		t.Fatalf("the 10-byte reserve after the refusal: %q, %v", b, err)
	}
}

// TestShardCutShortUnderRunningTrainer: a prepared shard truncated under a running trainer (its
// map now reaches past the file's end) makes the next step that reads past that end fail with
// ErrData naming the record and the dataset, the record's index recorded by FaultOf, not leave
// the run failed or counted; the process used to die of the memory fault (SIGBUS: "unexpected
// fault address", a runtime trace, exit 2) without leaving the cluster or recording its fault.
func TestShardCutShortUnderRunningTrainer(t *testing.T) {
	run, _ := mnistRun(t, 4)
	src, err := dataset.Open("mnist:test", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "prep")
	if _, err := dataset.Prepare(src, dir, 0); err != nil {
		t.Fatal(err)
	}
	run.Dataset = dir
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "shard-00000.bin"), 4096); err != nil {
		t.Fatal(err)
	}
	_, err = tr.Step(context.Background())
	f, ok := FaultOf(err, tr)
	want := fmt.Sprintf("trainer: the dataset cannot be read: record %d of %s: a memory fault reading the file that holds it (SIGBUS): the file was cut short under the running trainer; "+
		"the data changed on this trainer's disk after it started: put the run's data back and start the trainer again", f.Record, dir)
	if !errors.Is(err, ErrData) || FailsRun(err) || !ok || f.Kind != FaultData || f.Record < 0 || err.Error() != want {
		t.Fatalf("Step on a shard cut short: %v (fault %+v, %v)\nwant ErrData: %s", err, f, ok, want)
	}
	if tr.StepCount() != 1 {
		t.Fatalf("StepCount %d after the failed step, want 1", tr.StepCount())
	}
}
