package trainer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFaultRecheck: the record of a trainer's own failure goes through its volume (SaveFault,
// LoadFault) and Recheck checks what it names again: a committed checkpoint trained on other data
// is refused with the same line while the fingerprint differs and the coordinators still commit
// that checkpoint, and passes with the run's data or once it was rolled back; a volume fault,
// recorded with one save's room (SaveBytes), is one line naming that size, the volume and the test
// write's error (ErrVolume, and that error) while a write of that size fails there, and passes,
// leaving nothing behind, where it succeeds or is stopped; a record of another run's config is
// stale (nil); ClearFault removes the record, and a record that does not parse is an error naming
// the file.
func TestFaultRecheck(t *testing.T) {
	ctx := context.Background()
	tr, st := nodeTrainer(t, 6)
	was, now := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	at2 := tr.Snapshot(1, was)
	at2.Step = 2
	sha, err := st.Save(at2)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(2); err != nil {
		t.Fatal(err)
	}
	n := &Node{Trainer: tr, Store: st, Fingerprint: now, Log: slog.New(slog.DiscardHandler)}
	loadErr := n.load(context.Background(), Assignment{Generation: 2, StartStep: 2, CheckpointSHA: sha})
	f, ok := FaultOf(loadErr, tr)
	if !ok || f.Kind != FaultData || f.Checkpoint != 2 || f.CheckpointSHA256 != sha || f.Fingerprint != was || f.Record != -1 || f.Err != loadErr.Error() {
		t.Fatalf("FaultOf(%v) = %+v, %v", loadErr, f, ok)
	}
	vol := t.TempDir()
	if err := SaveFault(vol, f); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFault(vol)
	if err != nil || got == nil || *got != f {
		t.Fatalf("LoadFault: %+v, %v; want %+v", got, err, f)
	}
	if err := got.Recheck(ctx, tr, now, vol, nil); !errors.Is(err, ErrData) || err.Error() != loadErr.Error() {
		t.Fatalf("Recheck with the other data: %v\nwant ErrData, %v", err, loadErr)
	}
	if err := got.Recheck(ctx, tr, was, vol, nil); err != nil {
		t.Fatalf("Recheck with the run's data: %v", err)
	}
	// The coordinators still commit that checkpoint: the fault holds; rolled back past it (the
	// run started over, on other data): the record is stale.
	holds := func(step int64, h string) bool { return step == 2 && h == sha }
	if err := got.Recheck(ctx, tr, now, vol, holds); err == nil || err.Error() != loadErr.Error() {
		t.Fatalf("Recheck while step 2 is committed: %v, want %v", err, loadErr)
	}
	if err := got.Recheck(ctx, tr, now, vol, func(int64, string) bool { return false }); err != nil {
		t.Fatalf("Recheck once step 2 was rolled back: %v", err)
	}
	stale := f
	stale.Config = strings.Repeat("0", 64)
	if err := stale.Recheck(ctx, tr, now, vol, nil); err != nil {
		t.Fatalf("Recheck of another run's record: %v", err)
	}

	full := fmt.Errorf("%w: checkpoint: save step 4: grow %s: file too large", ErrVolume, filepath.Join(vol, "checkpoints.db"))
	vf, ok := FaultOf(full, tr)
	// One save's room: the four arenas, a page per 16 MiB chunk of each (one here), 64 pages and 1 MiB.
	body := 16 * int64(len(tr.Model().Params()))
	want := body + (64+4)*int64(os.Getpagesize()) + 1<<20
	if !ok || vf.Kind != FaultVolume || CheckpointBytes(tr) != body || vf.Bytes != want || vf.Bytes != SaveBytes(tr) {
		t.Fatalf("FaultOf(%v) = %+v, %v; want a volume fault of %d bytes", full, vf, ok, want)
	}
	gone := filepath.Join(vol, "gone") // a volume where no file can be created
	err = vf.Recheck(ctx, tr, now, gone, nil)
	var ve *VolumeCheckError
	line := fmt.Sprintf("trainer: this trainer's volume still cannot take one checkpoint's save: a test write of %d bytes to %s failed "+
		"(open: no such file or directory); free space on it (or fix what the error names) and start the trainer again", want, gone)
	if !errors.Is(err, ErrVolume) || !errors.Is(err, os.ErrNotExist) || !errors.As(err, &ve) || err.Error() != line || ve.Recorded != full.Error() {
		t.Fatalf("Recheck of a volume that cannot be written: %v\nwant ErrVolume and the write's error, saying\n%s", err, line)
	}
	if err := vf.Recheck(ctx, tr, now, vol, nil); err != nil {
		t.Fatalf("Recheck of a volume with room: %v", err)
	}
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	if err := vf.Recheck(stopped, tr, now, vol, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recheck stopped: %v, want context.Canceled", err)
	}
	ents, err := os.ReadDir(vol)
	if err != nil || len(ents) != 1 || ents[0].Name() != FaultFile {
		t.Fatalf("the volume after the test write: %v, %v; want only %s", ents, err, FaultFile)
	}

	if err := ClearFault(vol); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadFault(vol); got != nil || err != nil {
		t.Fatalf("LoadFault after ClearFault: %+v, %v", got, err)
	}
	if err := ClearFault(vol); err != nil {
		t.Fatalf("ClearFault without a record: %v", err)
	}
	if err := os.WriteFile(filepath.Join(vol, FaultFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFault(vol); err == nil || !strings.HasPrefix(err.Error(), filepath.Join(vol, FaultFile)+": ") {
		t.Fatalf("LoadFault of a torn record: %v, want an error naming the file", err)
	}
}
