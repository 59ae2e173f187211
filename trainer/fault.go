package trainer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"ddpm/checkpoint"
	"ddpm/internal/atomicfile"
)

// FaultFile is the file, in a cluster trainer's volume (--data-dir), recording the failure of
// its own (ErrData, ErrVolume) it last left the run for: a Fault in JSON. The trainer writes it
// as it exits and reads it at its next start, before it joins.
const FaultFile = "fault.json"

// Kinds of Fault.
const (
	FaultData   = "data"   // this trainer's copy of the run's data (ErrData)
	FaultVolume = "volume" // this trainer's volume: its checkpoint file, its disk (ErrVolume)
)

// Fault records what failed when a cluster trainer left its run for a failure of its own, so
// that a restart (Kubernetes restarts a container that exits) can check exactly that again
// before it joins. A restart onto the same fault used to join, start a new generation (sending
// every healthy trainer back to the last committed checkpoint) and leave again, once per
// restart. The check costs what the fault names: one record read (a prepared shard's sha256),
// one fingerprint comparison, or one write of the room a checkpoint save takes (SaveBytes); a
// data fault that names no record reads them all (Recheck).
type Fault struct {
	Kind   string `json:"kind"`   // FaultData or FaultVolume
	Config string `json:"config"` // the run config's hash: a record of another run is stale
	// Err is the error's text, the trainer's last line ("ddpm: " aside).
	Err string `json:"err"`
	// Record is the index of the dataset record that could not be read (a data fault met in a
	// step; its prepared shard's sha256 is checked again as the record is read), -1 for none.
	Record int `json:"record"`
	// Checkpoint, CheckpointSHA256 and Fingerprint: a data fault met at a load, the committed
	// checkpoint of step Checkpoint (that sha256) trained on data of Fingerprint (hex), which
	// this trainer's dataset does not have.
	Checkpoint       int64  `json:"checkpoint,omitempty"`
	CheckpointSHA256 string `json:"checkpoint_sha256,omitempty"`
	Fingerprint      string `json:"fingerprint,omitempty"`
	// Bytes is, for a volume fault, the size in bytes of the write that is tried again: what one
	// save of a checkpoint of the run's model needs on the volume (SaveBytes), as the failed save
	// or fetch did.
	Bytes int64 `json:"bytes,omitempty"`
}

// recordError is ErrData for one record (index record) of the dataset that could not be read; its
// text is the wrapped error's.
type recordError struct {
	record int
	err    error
}

func (e *recordError) Error() string { return e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

// fingerprintError is ErrData for a committed checkpoint of step step (sha256 sha) trained on
// data of fingerprint want, while this trainer's dataset has have.
type fingerprintError struct {
	step            int64
	sha, want, have string
}

// Error says the data is other data, not data that cannot be read (ErrData's own text): it was
// read, and its fingerprint is not the one the run's checkpoints were trained on.
func (e *fingerprintError) Error() string {
	return fmt.Sprintf("trainer: this trainer's dataset is not the run's: checkpoint step %d was trained on data of fingerprint %s, this trainer's dataset has %s: "+
		"the data changed since the run started, or this trainer was given other data; give the trainer the run's data", e.step, e.want, e.have)
}

func (e *fingerprintError) Unwrap() error { return ErrData }

// VolumeCheckError is a volume fault still there at a restart (Fault.Recheck): the test write of
// Bytes bytes (SaveBytes) to the volume Dir failed with Write. Its text says so in one line, with
// the write's own error briefly (open, write or sync, and the system's words: "file too large",
// "no space left on device", "read-only file system"), and what to do; Recorded is the first
// failure's text (a test write cannot say "save step N"), for the log. It wraps ErrVolume and
// Write.
type VolumeCheckError struct {
	Recorded string
	Dir      string
	Bytes    int64
	Write    error
}

func (e *VolumeCheckError) Error() string {
	why := e.Write.Error()
	var pe *fs.PathError
	if errors.As(e.Write, &pe) {
		why = pe.Op + ": " + pe.Err.Error()
	}
	return fmt.Sprintf("%v still cannot take one checkpoint's save: a test write of %d bytes to %s failed (%s); "+
		"free space on it (or fix what the error names) and %s", ErrVolume, e.Bytes, e.Dir, why, RestartAdvice)
}

func (e *VolumeCheckError) Unwrap() []error { return []error{ErrVolume, e.Write} }

// CheckpointBytes is the size in bytes of one checkpoint of tr's model: parameters, EMA and
// Adam's two moments, float32 each.
func CheckpointBytes(tr *Trainer) int64 {
	return 4 * int64(len(tr.model.Params())+len(tr.ema)+len(tr.adam.M)+len(tr.adam.V))
}

// SaveBytes is the room in bytes one save of a checkpoint of tr's model takes on its volume, at
// most: checkpoint.Store.Save preallocates, past the file's high-water mark, the checkpoint's
// four arenas (CheckpointBytes), one page per chunk of at most checkpoint.MaxChunkBytes of each
// arena (at most CheckpointBytes/MaxChunkBytes + 4 chunks), 64 pages for the header, leaf and
// branch pages, and 1 MiB; pages are the OS page size (bbolt's). It is not twice a checkpoint:
// bbolt's copy-on-write writes the new checkpoint's pages before the old ones are freed, but
// Save asks room for the new pages only (the old ones lie below the high-water mark already),
// and the pages it frees by pruning are reused by later saves, not asked for again.
func SaveBytes(tr *Trainer) int64 {
	body := CheckpointBytes(tr)
	pages := 64 + numArenas + body/checkpoint.MaxChunkBytes
	return body + pages*int64(os.Getpagesize()) + 1<<20
}

// numArenas is the number of arenas of a checkpoint: parameters, EMA, Adam's m and v.
const numArenas = 4

// FaultOf is the Fault to record for err, the error a cluster trainer of tr left its run for,
// and true; false when err is neither ErrData nor ErrVolume (nothing a restart could check).
func FaultOf(err error, tr *Trainer) (Fault, bool) {
	f := Fault{Config: tr.run.Hash(), Err: err.Error(), Record: -1}
	var re *recordError
	var fe *fingerprintError
	switch {
	case errors.As(err, &re):
		f.Kind, f.Record = FaultData, re.record
	case errors.As(err, &fe):
		f.Kind, f.Checkpoint, f.CheckpointSHA256, f.Fingerprint = FaultData, fe.step, fe.sha, fe.want
	case errors.Is(err, ErrData):
		f.Kind = FaultData // nothing precise to check: the restart joins
	case errors.Is(err, ErrVolume):
		f.Kind, f.Bytes = FaultVolume, SaveBytes(tr)
	default:
		return Fault{}, false
	}
	return f, true
}

// SaveFault writes f as dir's FaultFile (mode 0644 less the umask) with atomicfile: a temporary
// file, synced before it is renamed into place and the volume's directory synced after, so that a
// crash, the process's or the machine's (a node lost, the pod rescheduled), leaves the old record
// or the new one, never an empty file. Errors: the file system's, naming the FaultFile (a volume
// too full even for the record: SaveFaultReserved writes it into the room kept for it).
func SaveFault(dir string, f Fault) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(dir, FaultFile), 0o644, atomicfile.Replace, append(b, '\n'))
}

// FaultReserveFile is the file, in a cluster trainer's volume, holding the room of a fault record
// (FaultReserveBytes, written) while the volume has room: a trainer that leaves its run for a
// volume with no room even for the record (SaveFault fails) writes the record into it in place
// and renames it to FaultFile (SaveFaultReserved). ReserveFault makes it again after a join.
const FaultReserveFile = ".fault-reserve"

// FaultReserveBytes is the size in bytes of FaultReserveFile: a record's JSON takes a few hundred
// bytes plus its error's text; a longer text is shortened to fit (SaveFaultReserved).
const FaultReserveBytes = 16 << 10

// ReserveFault makes sure dir holds FaultReserveFile of FaultReserveBytes, written (spaces, not
// a hole) and synced, so that its blocks are the volume's to overwrite later; one of that size
// is left as it is, one of another size (a killed write) is written again. Errors: the file
// system's (a volume already full: the record then falls back on SaveFault alone, as before).
// The reserve holds on file systems that overwrite a file's blocks in place (ext4, XFS, tmpfs);
// on copy-on-write ones (btrfs, ZFS) an overwrite takes new blocks, and a full volume there may
// still leave no record.
func ReserveFault(dir string) error {
	p := filepath.Join(dir, FaultReserveFile)
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Size() == FaultReserveBytes {
		return nil
	}
	w, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = w.Write(bytes.Repeat([]byte{' '}, FaultReserveBytes))
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
	}
	return err
}

// SaveFaultReserved writes f as dir's FaultFile through dir's FaultReserveFile (ReserveFault),
// for a volume too full for SaveFault: the record's JSON, then spaces up to the reserve's size
// (JSON allows the trailing blanks; LoadFault reads it), is written over the reserve in place,
// neither truncating nor growing it, synced, renamed into place and the directory synced (as
// SaveFault); the reserve is used up (the next join makes another). An error text too long for
// the reserve is cut (at a character) and ends with "...". Errors: no reserve (os.ErrNotExist),
// and the file system's.
func SaveFaultReserved(dir string, f Fault) error {
	p := filepath.Join(dir, FaultReserveFile)
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	var b []byte
	for {
		if b, err = json.MarshalIndent(f, "", "  "); err != nil {
			return err
		}
		if int64(len(b)) < fi.Size() || f.Err == "" {
			break
		}
		r := []rune(f.Err)
		if len(r) <= 8 {
			f.Err = "" // no room for any of it: the size check below says so
			continue
		}
		f.Err = string(r[:len(r)/2]) + "..."
	}
	if int64(len(b)) >= fi.Size() {
		return fmt.Errorf("%s: %d bytes, too small for a fault record of %d", p, fi.Size(), len(b)+1)
	}
	buf := bytes.Repeat([]byte{' '}, int(fi.Size()))
	copy(buf, b)
	buf[len(b)] = '\n'
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = w.WriteAt(buf, 0)
	if err == nil {
		err = w.Sync()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(p, filepath.Join(dir, FaultFile)); err != nil {
		return err
	}
	// The rename is the record: flush dir's entry, as SaveFault's atomicfile write does.
	return atomicfile.SyncDir(dir)
}

// LoadFault reads dir's FaultFile: nil without one. A record that does not parse is an error.
func LoadFault(dir string) (*Fault, error) {
	b, err := os.ReadFile(filepath.Join(dir, FaultFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f Fault
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, FaultFile), err)
	}
	return &f, nil
}

// ClearFault removes dir's FaultFile (none is not an error).
func ClearFault(dir string) error {
	err := os.Remove(filepath.Join(dir, FaultFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Recheck checks again what f records, for a trainer tr of the run whose dataset has fingerprint
// fingerprint and whose volume is dir, before it joins: nil when the fault is gone (or the record
// is of another run, or of data this trainer no longer has), else the error the trainer would
// leave for again:
//   - a record that could not be read: it is read again (ErrData, the dataset's error as a
//     step words it: for a prepared copy its shard's sha256 is computed again, that shard only);
//   - a committed checkpoint trained on other data: the fingerprints are compared again while
//     lineage (from the coordinators' state; nil: unknown, the record stands) reports that the
//     run's committed line still holds that checkpoint (step, sha256): a rollback past it (the
//     run started over, maybe on other data) makes the record stale, a checkpoint that merely
//     fell off the coordinators' list of the newest keep_checkpoints does not;
//   - a volume: a file of f.Bytes (SaveBytes) is written to dir, synced and removed; while that
//     fails, a *VolumeCheckError;
//   - a data fault recorded with neither a record nor a checkpoint (FaultOf of an ErrData that
//     names neither): every record of the dataset is read, in order, until one fails (for a
//     prepared copy that is each shard's sha256 against index.json, once: 12 ms for the 7.8 MB
//     of mnist:test's 10,000 records; other formats' records are read as their Open read
//     them). The first that fails is the error, and the record is narrowed to it (SaveFault),
//     so that the next restart reads that one. Data changed in place under a running trainer
//     after its shard was checked is read as it now is, with no error and no record: a restart
//     checks it (the shard's sha256 at its first read), the running trainer does not.
//
// ctx ending stops the test write (its file removed), or the reading of every record, with ctx's
// error.
func (f Fault) Recheck(ctx context.Context, tr *Trainer, fingerprint, dir string, lineage func(step int64, sha string) bool) error {
	if f.Config != tr.run.Hash() {
		return nil
	}
	switch {
	case f.Kind == FaultData && f.Record >= 0:
		if f.Record >= tr.data.Len() {
			return nil // other data than the one that failed: the join's checks judge it
		}
		c, h, w := tr.data.Shape()
		if err := tr.image(f.Record, make([]float32, c*h*w)); err != nil {
			return &recordError{record: f.Record, err: tr.dataError(err)}
		}
	case f.Kind == FaultData && f.Fingerprint == "":
		// No record or checkpoint named: every record is read, as the first steps of every
		// shard would read them (a prepared copy: each shard's sha256 against index.json).
		i, err := readAll(ctx, tr)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			// Narrowed: the next restart reads that one record.
			f.Record = i
			_ = SaveFault(dir, f)
			return &recordError{record: i, err: tr.dataError(err)}
		}
	case f.Kind == FaultData && f.Fingerprint != "":
		if lineage != nil && !lineage(f.Checkpoint, f.CheckpointSHA256) {
			return nil
		}
		if fingerprint != f.Fingerprint {
			return &fingerprintError{step: f.Checkpoint, sha: f.CheckpointSHA256, want: f.Fingerprint, have: fingerprint}
		}
	case f.Kind == FaultVolume:
		if err := probeWrite(ctx, dir, f.Bytes); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &VolumeCheckError{Recorded: f.Err, Dir: dir, Bytes: f.Bytes, Write: err}
		}
	}
	return nil
}

// readAll reads every record of tr's dataset in order, stopping at the first that fails (its
// index and the dataset's error) or when ctx ends (checked every 256 records).
func readAll(ctx context.Context, tr *Trainer) (int, error) {
	c, h, w := tr.data.Shape()
	buf := make([]float32, c*h*w)
	for i := range tr.data.Len() {
		if i%256 == 0 && ctx.Err() != nil {
			return i, ctx.Err()
		}
		if err := tr.image(i, buf); err != nil {
			return i, err
		}
	}
	return -1, nil
}

// ProbeFile is the file of Recheck's test write in a volume, removed after it; one left by a
// killed process is overwritten and removed by the next.
const ProbeFile = ".space-check"

// probeWrite writes n bytes to dir's ProbeFile, syncs and removes it, stopping when ctx ends.
// The bytes are not zeros: a compressing file system stores a file of zeros in next to no room.
func probeWrite(ctx context.Context, dir string, n int64) error {
	f, err := os.OpenFile(filepath.Join(dir, ProbeFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	buf := make([]byte, 1<<20)
	x := uint64(0x9E3779B97F4A7C15)
	for i := range buf {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		buf[i] = byte(x)
	}
	for n > 0 {
		if err := ctx.Err(); err != nil {
			f.Close()
			return err
		}
		k := min(n, int64(len(buf)))
		if _, err := f.Write(buf[:k]); err != nil {
			f.Close()
			return err
		}
		n -= k
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
