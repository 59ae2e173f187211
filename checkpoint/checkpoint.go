// Package checkpoint stores the whole state of a training run in one bbolt file per trainer
// volume, so that a crash at any instant loses nothing committed and a resume continues bit for
// bit (DESIGN.md section 6).
//
// A checkpoint is written by one bbolt write transaction (fsync on commit; NoSync is never set):
// a header (format version, step, generation, run-config hash, dataset fingerprint, model preset,
// tensor index with PyTorch names and shapes, optimizer step, RNG state, data cursor, sha256) and
// the parameter, EMA, Adam m and Adam v arenas in chunks of at most 16 MiB. schema.go lists
// every bucket and key; codec.go defines the canonical encoding the sha256 covers, which depends
// only on the state, so identical state hashes identically on every rank.
//
// Only committed checkpoints (MarkCommitted, after the coordinator saw every rank agree) are
// restart points; Prune keeps the last k of them plus optional milestones. A checkpoint that is
// torn, misses a bucket or a chunk, or whose bytes do not hash to its header's sha256 is
// ErrCorruptCheckpoint, and LatestVerified / LatestCommitted skip it for the previous good one.
// Reads of a damaged file (a truncated file faults when mmap'd pages lie past its end) are
// guarded: faults and bbolt's corruption panics become ErrCorruptCheckpoint, never a crash.
//
// # Readers and a live trainer
//
// bbolt allows one writing process per file (an exclusive flock) and any number of reader
// transactions inside that process. Reading never blocks training:
//   - inside the trainer process, readers (Get, Verify, the transfer service) use bbolt read
//     transactions, which run beside the writer (MVCC). The transfer service copies one chunk
//     (<= 16 MiB) per short transaction, so a slow peer never holds a transaction open;
//   - other processes (`ddpm sample`, `ddpm checkpoint ...`) open the file read-only with a
//     short lock timeout; while a trainer holds it they get ErrInUse naming the trainer's pid
//     at once and, instead of waiting, ask the trainer for a verified copy over gRPC
//     (Fetch; `ddpm checkpoint fetch ADDR --step N --out FILE`). A reader never holds the
//     trainer's file, so the trainer can always open it.
//
// Files with the same state have the same checkpoint sha256, not the same bytes: bbolt pages,
// free lists and chunk sizes are not part of a checkpoint's identity.
package checkpoint

import (
	"errors"
	"fmt"
)

// Errors returned by this package, wrapped with %w and a description naming the file and step.
var (
	// ErrCorruptCheckpoint: a checkpoint is torn, misses its header, a bucket or a chunk, or its
	// bytes do not hash to the sha256 in its header; also a file that bbolt cannot read or that
	// is shorter than its own metadata says (truncated).
	ErrCorruptCheckpoint = errors.New("corrupt checkpoint")
	// ErrNotFound: no checkpoint (or no committed checkpoint, or no verified one) for the step asked.
	ErrNotFound = errors.New("checkpoint not found")
	// ErrNoneYet: the file holds no checkpoint at all (its trainer has not written its first);
	// Latest, LatestVerified and LatestCommitted return it. It is ErrNotFound under errors.Is,
	// and its text is only "no checkpoint yet" (not followed by ErrNotFound's).
	ErrNoneYet error = noneYetError{}
	// ErrInUse: another process holds the file's lock; the error is an *InUseError naming it.
	ErrInUse = errors.New("checkpoint file in use")
	// ErrFormat: the file or header was written by a newer format version than this build reads.
	ErrFormat = errors.New("unsupported checkpoint format")
	// ErrConflict: Save of a step that is already committed with a different sha256.
	ErrConflict = errors.New("checkpoint conflicts with a committed one")
	// ErrReadOnly: a write (Save, MarkCommitted, Prune) on a store opened with Options.ReadOnly.
	ErrReadOnly = errors.New("checkpoint store is read-only")
	// ErrTransfer: a peer transfer failed (connection, protocol, or the peer's error).
	ErrTransfer = errors.New("checkpoint transfer failed")
	// ErrStorage: a write to the file failed for a cause of the machine holding it, not of the
	// checkpoint written: the disk is full or fails (ENOSPC, EFBIG, EIO while growing or
	// committing), or bbolt met damaged pages of the file (then ErrCorruptCheckpoint too, and
	// the error says to move the file aside). The error's text names the file and the cause;
	// errors.Is(err, ErrStorage) tells it from ErrConflict, ErrNotFound and a peer's failure.
	ErrStorage = errors.New("checkpoint file cannot be written")
)

// noneYetError is ErrNoneYet: "no checkpoint yet", ErrNotFound under errors.Is.
type noneYetError struct{}

func (noneYetError) Error() string        { return "no checkpoint yet" }
func (noneYetError) Is(target error) bool { return target == ErrNotFound }

// InUseError is the error Open returns when another process holds the file's lock past the
// lock timeout. PID is the holder's process id (0 if it could not be determined). It matches
// ErrInUse under errors.Is.
type InUseError struct {
	Path string
	PID  int
}

func (e *InUseError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("checkpoint: %s in use by another process", e.Path)
	}
	return fmt.Sprintf("checkpoint: %s in use by process %d", e.Path, e.PID)
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// TensorInfo locates one parameter tensor in the flat arenas: Name and Shape are the reference
// PyTorch model's state_dict key and shape (Conv2d weight [out, in, kh, kw], Linear weight
// [out, in], ...); the tensor is arena[Offset : Offset+Len] in row-major order, Len = product(Shape).
type TensorInfo struct {
	Name   string
	Shape  []int
	Offset int
	Len    int
}

// Checkpoint is the whole state of a run at the end of Step. The four arenas share the
// parameter layout described by Tensors; EMA, AdamM and AdamV have len(Params) elements or none.
type Checkpoint struct {
	Step               int64  // optimizer steps completed
	Generation         uint64 // coordinator generation that wrote it (provenance; it is hashed)
	ConfigHash         string // run-config hash (config.Hash)
	DatasetFingerprint string // identifies the training data the cursor indexes
	Preset             string // the run config's U-Net model (tiny, cifar10, lsun256, ...), shown as MODEL
	Tensors            []TensorInfo

	Params, EMA, AdamM, AdamV []float32

	OptStep int64  // Adam's step counter (bias correction)
	RNG     []byte // RNG state, opaque to this package (the trainer's run record: trainer.InitSHA256, trainer.NonFiniteStreak)
	Cursor  uint64 // next global sample position of the data sampler

	// SHA256 is the lower-case hex sha256 of the canonical encoding (codec.go). Save ignores
	// the value it is given and returns the computed one; ReplaceCommitted refuses a value that
	// differs from it; Get, Latest..., Download and Fetch set it.
	SHA256 string
}

func (c *Checkpoint) arenas() [numArenas][]float32 {
	return [numArenas][]float32{c.Params, c.EMA, c.AdamM, c.AdamV}
}

// Info describes one stored checkpoint without reading its arenas (List).
type Info struct {
	Step       int64
	Generation uint64
	Preset     string
	ConfigHash string
	SHA256     string // hex, as recorded in the header (not recomputed)
	Bytes      int64  // arena bytes (4 per float32)
	Committed  bool
	RNG        []byte // the header's RNG state, as Checkpoint.RNG
	// Err is non-nil (wrapping ErrCorruptCheckpoint) when the header is missing or unreadable;
	// only Step and Committed are meaningful then.
	Err error
}
