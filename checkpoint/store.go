package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
)

const (
	// MaxChunkBytes is the largest chunk an arena is split into (16 MiB).
	MaxChunkBytes = 16 << 20
	// DefaultLockTimeout is how long Open waits for another process's lock before ErrInUse.
	DefaultLockTimeout = time.Second
)

// Options configure Open. The zero value opens read-write with the defaults.
type Options struct {
	// ReadOnly opens with a shared lock; writes return ErrReadOnly. A missing file is an error.
	ReadOnly bool
	// LockTimeout bounds the wait for another process's lock (default DefaultLockTimeout).
	LockTimeout time.Duration
	// ChunkBytes is the chunk size Save splits arenas into: a positive multiple of 4, at most
	// MaxChunkBytes (default MaxChunkBytes). Open panics on other values.
	ChunkBytes int
}

// Store is an open checkpoint file. Its methods are safe for concurrent use; bbolt runs one
// write transaction at a time and read transactions beside it.
type Store struct {
	db         *bolt.DB
	path       string
	readOnly   bool
	chunkBytes int
	rf         *os.File // a second descriptor for large reads (readChunk)
	pidPath    string   // sidecar holding the writer's pid ("" for read-only stores)
	truncated  error    // non-nil when the file is shorter than its metadata says (read-only only)
}

// Open opens (read-write: creates) the checkpoint file at path. If another process holds it,
// Open fails after opts.LockTimeout with an *InUseError (ErrInUse) naming that process. A file
// bbolt cannot read, or that is shorter than its metadata says (truncated), is
// ErrCorruptCheckpoint. A truncated file still opens ReadOnly: reads of what lies before the
// cut work, reads that reach past it fail with ErrCorruptCheckpoint naming the truncation.
func Open(path string, opts Options) (_ *Store, err error) {
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	chunk := opts.ChunkBytes
	if chunk == 0 {
		chunk = MaxChunkBytes
	}
	if chunk < 4 || chunk > MaxChunkBytes || chunk%4 != 0 {
		panic(fmt.Sprintf("checkpoint: Options.ChunkBytes %d is not a positive multiple of 4 <= %d", chunk, MaxChunkBytes))
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("checkpoint: %s is unreadable (%v): %w", path, r, ErrCorruptCheckpoint)
		}
	}()
	if !opts.ReadOnly {
		// A writer would fault loading the free list of a truncated file: look first, read-only.
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			r, err := Open(path, Options{ReadOnly: true, LockTimeout: timeout})
			if err != nil {
				return nil, err
			}
			r.Close()
			if r.truncated != nil {
				return nil, r.truncated
			}
		}
	}
	if fi, err := os.Stat(path); err == nil && fi.Size() == 0 && opts.ReadOnly {
		return nil, fmt.Errorf("checkpoint: %s is not a readable checkpoint file (it is empty): %w", path, ErrCorruptCheckpoint)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly, InitialMmapSize: mmapSize(path)})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, &InUseError{Path: path, PID: lockHolder(path)}
	case errors.Is(err, fs.ErrNotExist) || errors.As(err, new(*fs.PathError)):
		// The file could not be opened (an I/O error, a path the system refuses): the error
		// names the path and the cause; nothing says the file is damaged.
		return nil, fmt.Errorf("checkpoint: %w", err)
	case err != nil:
		return nil, fmt.Errorf("checkpoint: %s is not a readable checkpoint file (%v): %w", path, err, ErrCorruptCheckpoint)
	}
	db.AllocSize = 1 << 20 // bbolt's own growth step, should Save's preallocation fall short
	s := &Store{db: db, path: path, readOnly: opts.ReadOnly, chunkBytes: chunk}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	if s.rf, err = os.Open(path); err != nil {
		db.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	if !opts.ReadOnly {
		// Advisory: lets a process that times out on the lock name this one (see lockHolder).
		s.pidPath = path + ".pid"
		_ = os.WriteFile(s.pidPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	}
	return s, nil
}

// mmapSize is the address space reserved for the file's map: bbolt re-maps when a write
// transaction outgrows the map and then copies every value of that transaction to the heap
// (node.dereference), which for a 572 MB checkpoint costs more than writing it. Reserving
// well past the file (virtual address space only; the file does not grow) avoids that.
func mmapSize(path string) int {
	const minMap = 8 << 30
	if strconv.IntSize < 64 {
		return 0
	}
	if fi, err := os.Stat(path); err == nil && 2*fi.Size() > minMap {
		return int(2 * fi.Size())
	}
	return minMap
}

// init checks the file against its own metadata and, for a writer, creates the buckets.
func (s *Store) init() error {
	var need int64
	if err := s.openView(func(tx *bolt.Tx) error { need = tx.Size(); return nil }); err != nil { // meta page only
		return err
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if fi.Size() < need {
		s.truncated = fmt.Errorf("checkpoint: %s is truncated: %d bytes on disk, its metadata needs %d: %w",
			s.path, fi.Size(), need, ErrCorruptCheckpoint)
		if !s.readOnly {
			return s.truncated
		}
		return nil // reads of pages past the end fail, guarded, as ErrCorruptCheckpoint
	}
	var format []byte
	complete := false // the buckets are there: a writer has nothing to create
	if err := s.openView(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); m != nil {
			format = bytes.Clone(m.Get(keyFormat))
		}
		complete = format != nil && tx.Bucket(bucketCheckpoints) != nil && tx.Bucket(bucketCommitted) != nil
		return nil
	}); err != nil {
		return err
	}
	if format != nil {
		if len(format) != 4 {
			return fmt.Errorf("checkpoint: %s: format key of %d bytes: %w", s.path, len(format), ErrCorruptCheckpoint)
		}
		if v := uint32(format[0])<<24 | uint32(format[1])<<16 | uint32(format[2])<<8 | uint32(format[3]); v > FormatVersion {
			return fmt.Errorf("checkpoint: %s has format version %d, this build reads 1..%d: %w", s.path, v, FormatVersion, ErrFormat)
		}
	}
	if s.readOnly || complete {
		// Opening a complete file writes nothing: a file refused after Open (a standalone
		// trainer's volume whose checkpoints are all damaged) stays byte for byte as it was.
		return nil
	}
	return s.guard(func() error { return s.db.Update(s.createBuckets(format == nil)) }, s.openDamage)
}

// createBuckets is init's write: the buckets, and the format key when the file has none.
func (s *Store) createBuckets(noFormat bool) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		m, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if noFormat {
			if err := m.Put(keyFormat, []byte{0, 0, 0, FormatVersion}); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketCheckpoints, bucketCommitted} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock.
func (s *Store) Close() error {
	if s.pidPath != "" {
		if b, err := os.ReadFile(s.pidPath); err == nil && string(b) == strconv.Itoa(os.Getpid())+"\n" {
			_ = os.Remove(s.pidPath)
		}
	}
	s.rf.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("checkpoint: close %s: %w", s.path, err)
	}
	return nil
}

// Save writes c as checkpoint c.Step in one fsync'ed write transaction and returns the sha256
// (hex) of its canonical encoding. An uncommitted checkpoint of the same step is replaced; a
// committed one is left as is when the sha256 matches and the stored copy verifies (a damaged
// copy is rewritten), and is ErrConflict when the sha256 differs. c is not
// modified and its slices are not retained. Save panics if c is inconsistent (negative step,
// EMA/AdamM/AdamV neither empty nor len(Params), a tensor outside Params or with
// product(Shape) != Len, a repeated name).
func (s *Store) Save(c *Checkpoint) (string, error) { return s.save(c, false) }

// ReplaceCommitted stores c as checkpoint c.Step and marks it committed, replacing whatever the
// file holds of that step (committed or not, other bytes, a damaged copy), all in one fsync'ed
// write transaction, and returns the sha256 (hex). It is how a verified copy from elsewhere
// (Download) overrides a held one. c.SHA256 must be the sha256 c's bytes hash to, as Download
// and Get set it: one that differs (or is empty) is ErrCorruptCheckpoint. Any failure (that
// check, a file that cannot grow, a crash before bbolt's commit) leaves the file as it was: the
// step's old copy stays, committed if it was, with its sha256. A step already committed with
// c's sha256 and intact is left as is. Panics as Save does.
func (s *Store) ReplaceCommitted(c *Checkpoint) (string, error) { return s.save(c, true) }

// save is Save, and with replace ReplaceCommitted.
func (s *Store) save(c *Checkpoint, replace bool) (string, error) {
	h := headerOf(c, s.chunkBytes)
	if err := checkHeader(h); err != nil {
		panic("checkpoint: Save: " + err.Error())
	}
	if s.readOnly {
		return "", fmt.Errorf("checkpoint: save step %d to %s: %w", c.Step, s.path, ErrReadOnly)
	}
	var bodies [numArenas][]byte
	for i, a := range c.arenas() {
		bodies[i] = leBytes(a)
	}
	var hwm int64
	if err := s.writeView(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		return "", fmt.Errorf("checkpoint: save step %d to %s: %w", c.Step, s.path, err)
	}
	// Room for the body past the high-water mark, plus a page of overhead per chunk and the
	// header, leaf and branch pages: then bbolt never grows the file itself. The file's growth
	// (fallocate + fsync, mostly waiting on the disk) runs beside the sha256 (CPU), and so does
	// a garbage collection: at commit bbolt copies the body into one fresh buffer per chunk
	// (572 MB for the cifar10 preset), garbage after it. A trainer's steps allocate almost
	// nothing, so without a collection the previous Save's buffers (or a Get's arenas) are still
	// garbage when this one allocates as much again, and it faults in fresh memory instead of
	// reusing them (measured on this 2-core VM: saves 2 and 3 of a process spent 1.8-2.7 s in
	// bbolt's copy instead of 0.1 s). The collection costs 1-2 ms: the arenas hold no pointers.
	// A process's first Save (or one larger than any before it) has no such garbage to reuse:
	// prefaultHeap first faults the memory in with huge pages, beside the sha256 (the first
	// save's copy took 2.0 s in 4 KiB faults; prefaulting 0.3-1.1 s). During the commit,
	// startWriteback has the device write the first pages while bbolt copies the later ones.
	body, pages := int64(0), int64(64)
	for _, a := range c.arenas() {
		body += int64(4 * len(a))
		pages += int64((4*len(a) + s.chunkBytes - 1) / s.chunkBytes)
	}
	// A replacement is checked before anything touches the file (ReplaceCommitted's promise);
	// a plain Save hashes beside the file's growth.
	var sums [numArenas][32]byte
	if replace {
		sums = sumArenas(&bodies)
		if sum := bodySum(h, &sums); hex.EncodeToString(sum[:]) != c.SHA256 {
			return "", fmt.Errorf("checkpoint: replace step %d in %s: the checkpoint hashes to sha256 %x, it names %q (nothing was written): %w",
				c.Step, s.path, sum, c.SHA256, ErrCorruptCheckpoint)
		}
	}
	grown, collected := make(chan error, 1), make(chan struct{})
	go func() {
		prefaultHeap(body + pages*int64(s.db.Info().PageSize))
		runtime.GC()
		close(collected)
	}()
	go func() { grown <- preallocate(s.path, hwm+body+pages*int64(s.db.Info().PageSize)+1<<20) }()
	if !replace {
		sums = sumArenas(&bodies)
	}
	<-collected
	if err := <-grown; err != nil {
		return "", storageError{fmt.Errorf("checkpoint: save step %d: grow %s: %w", c.Step, s.path, err)}
	}
	sum := bodySum(h, &sums)
	h.Sha256 = sum[:]
	hb, err := proto.Marshal(h)
	if err != nil {
		return "", fmt.Errorf("checkpoint: encode header of step %d: %w", c.Step, err)
	}
	key := stepKey(c.Step)
	// A committed copy with this sha256 is kept only while it verifies: a damaged one (a bad
	// sector, a flipped bit) is rewritten from c, which hashes to the committed sha256. This is
	// how Fetch repairs a volume whose committed checkpoint went bad (found by chaos runs).
	intact := true
	if err := s.writeView(func(tx *bolt.Tx) error {
		intact = !bytes.Equal(tx.Bucket(bucketCommitted).Get(key), sum[:])
		return nil
	}); err != nil {
		return "", fmt.Errorf("checkpoint: save step %d to %s: %w", c.Step, s.path, err)
	} else if !intact {
		intact = s.Verify(c.Step) == nil
	}
	stopWriteback := startWriteback(s.rf)
	err = s.update(func(tx *bolt.Tx) error {
		if prev := tx.Bucket(bucketCommitted).Get(key); prev != nil {
			if !bytes.Equal(prev, sum[:]) && !replace {
				return fmt.Errorf("step %d is committed with sha256 %x, the new state hashes to %x: %w", c.Step, prev, sum, ErrConflict)
			}
			if intact && bytes.Equal(prev, sum[:]) {
				return errSame
			}
		}
		root := tx.Bucket(bucketCheckpoints)
		if root.Bucket(key) != nil {
			if err := root.DeleteBucket(key); err != nil {
				return damagedBucket(c.Step, err)
			}
		}
		b, err := root.CreateBucket(key)
		if err != nil {
			return err
		}
		for i, body := range bodies {
			ab, err := b.CreateBucket(arenaNames[i])
			if err != nil {
				return err
			}
			ab.FillPercent = 1 // keys are appended in order
			for j, off := 0, 0; off < len(body); j, off = j+1, off+s.chunkBytes {
				if err := ab.Put(chunkKey(j), body[off:min(off+s.chunkBytes, len(body))]); err != nil {
					return err
				}
			}
		}
		if err := b.Put(keyHeader, hb); err != nil {
			return err
		}
		if replace {
			return tx.Bucket(bucketCommitted).Put(key, sum[:])
		}
		return nil
	})
	stopWriteback()
	if err != nil && err != errSame {
		return "", fmt.Errorf("checkpoint: save step %d to %s: %w", c.Step, s.path, err)
	}
	return hex.EncodeToString(sum[:]), nil
}

// storageError marks err as ErrStorage without changing its text.
type storageError struct{ err error }

func (e storageError) Error() string   { return e.err.Error() }
func (e storageError) Unwrap() []error { return []error{e.err, ErrStorage} }

// errSame ends save's write transaction when the step is stored intact already.
var errSame = errors.New("checkpoint: same")

// update runs fn in a write transaction. A panic of bbolt's on a damaged page (its consistency
// assertions, a fault reading a page) rolls the transaction back (bbolt's Update does) and comes
// back as one error (ErrStorage, ErrCorruptCheckpoint) saying to move the file aside: writing on
// would spread the damage. A failure of the commit itself (the disk) is ErrStorage; fn's own
// errors ErrConflict, ErrNotFound and errSame are returned as they are.
func (s *Store) update(fn func(*bolt.Tx) error) error {
	err := s.guard(func() error { return s.db.Update(fn) }, writeDamage)
	if err == nil || isWriteDamage(err) || errors.Is(err, errSame) || errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		return err
	}
	return storageError{err}
}

// damagedBucket is the error of a bucket the file lists that bbolt cannot open (a page of the
// file zeroed or overwritten).
func damagedBucket(step int64, err error) error {
	return storageError{fmt.Errorf("the file is damaged (step %d's bucket: %v) and cannot be written safely; move it aside: %w", step, err, ErrCorruptCheckpoint)}
}

// writeView runs fn, a read that a write depends on (save's), in a read transaction; bbolt's
// panics on damaged pages come back as update's do (ErrStorage, ErrCorruptCheckpoint, move it
// aside): the file changed under an open writer (dd on a running trainer's volume) fails the
// write it was read for.
func (s *Store) writeView(fn func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(fn) }, writeDamage)
}

// view runs fn in a read transaction; memory faults (pages past the end of a truncated file)
// and bbolt's panics on damaged pages come back as ErrCorruptCheckpoint.
func (s *Store) view(what string, fn func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(fn) }, func(r any) error {
		if s.truncated != nil {
			return fmt.Errorf("%s is unreadable: %w", what, s.truncated)
		}
		return fmt.Errorf("checkpoint: %s: %s is unreadable (%v): %w", s.path, what, r, ErrCorruptCheckpoint)
	})
}

// openView runs fn, a read of Open's, in a read transaction; a panic on a damaged page is Open's
// error for a file bbolt cannot read.
func (s *Store) openView(fn func(*bolt.Tx) error) error {
	return s.guard(func() error { return s.db.View(fn) }, s.openDamage)
}

func (s *Store) openDamage(r any) error {
	return fmt.Errorf("checkpoint: %s is unreadable (%v): %w", s.path, r, ErrCorruptCheckpoint)
}

// guard runs op, one bbolt transaction (every View and Update of a Store goes through it),
// with memory faults as panics, and returns damaged(r) for a panic r: bbolt's consistency
// assertions and faults on a damaged page (a zeroed page, pages past a cut) panic, and a
// transaction that panics is rolled back by bbolt before the panic reaches here.
func (s *Store) guard(op func() error, damaged func(r any) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged(r)
		}
	}()
	return op()
}

// writeDamage is a write's (or its read's) error for bbolt's panic r on a damaged page.
func writeDamage(r any) error {
	return storageError{fmt.Errorf("the file is damaged (bbolt: %v) and cannot be written safely; move it aside: %w", r, ErrCorruptCheckpoint)}
}

// named prefixes a storage error of update's (the file damaged, the disk failing), which names
// no file, with "checkpoint: OP PATH: "; other errors (nil, ErrNotFound's, which names the path
// already) pass through.
func (s *Store) named(op string, err error) error {
	if errors.Is(err, ErrStorage) {
		return fmt.Errorf("checkpoint: %s %s: %w", op, s.path, err)
	}
	return err
}

// isWriteDamage reports whether err is writeDamage's (already ErrStorage).
func isWriteDamage(err error) bool {
	var se storageError
	return errors.As(err, &se)
}

func (s *Store) corrupt(step int64, format string, args ...any) error {
	return fmt.Errorf("checkpoint: %s step %d: %s: %w", s.path, step, fmt.Sprintf(format, args...), ErrCorruptCheckpoint)
}

// loadHeader returns checkpoint step's decoded, checked header and bucket.
func (s *Store) loadHeader(tx *bolt.Tx, step int64) (*api.CheckpointHeader, *bolt.Bucket, error) {
	root := tx.Bucket(bucketCheckpoints)
	var cb *bolt.Bucket
	if root != nil {
		cb = root.Bucket(stepKey(step))
	}
	if cb == nil {
		return nil, nil, fmt.Errorf("checkpoint: %s step %d: %w", s.path, step, ErrNotFound)
	}
	raw := cb.Get(keyHeader)
	if raw == nil {
		return nil, nil, s.corrupt(step, "missing key %s", keyHeader)
	}
	h := new(api.CheckpointHeader)
	if err := proto.Unmarshal(raw, h); err != nil {
		return nil, nil, s.corrupt(step, "header: %v", err)
	}
	if err := checkHeader(h); err != nil {
		if errors.Is(err, ErrFormat) {
			return nil, nil, fmt.Errorf("checkpoint: %s step %d: %w", s.path, step, err)
		}
		return nil, nil, s.corrupt(step, "header: %v", err)
	}
	if h.Step != step || len(h.Sha256) != sha256.Size {
		return nil, nil, s.corrupt(step, "header names step %d, sha256 of %d bytes", h.Step, len(h.Sha256))
	}
	return h, cb, nil
}

// chunks returns, per arena, the stored chunks in order (slices of the mmap, valid inside tx).
func (s *Store) chunks(cb *bolt.Bucket, h *api.CheckpointHeader) ([numArenas][][]byte, error) {
	var out [numArenas][][]byte
	for i, name := range arenaNames {
		ab := cb.Bucket(name)
		if ab == nil {
			return out, s.corrupt(h.Step, "missing bucket %s", name)
		}
		total := uint64(0)
		cur := ab.Cursor()
		j := 0
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if !bytes.Equal(k, chunkKey(j)) || v == nil {
				return out, s.corrupt(h.Step, "bucket %s: chunk %d missing or out of order (key %x)", name, j, k)
			}
			if len(v)%4 != 0 || (h.ChunkBytes > 0 && len(v) > int(h.ChunkBytes)) {
				return out, s.corrupt(h.Step, "bucket %s: chunk %d has %d bytes", name, j, len(v))
			}
			out[i] = append(out[i], v)
			total += uint64(len(v))
			j++
		}
		if total != 4*h.ArenaLen[i] {
			return out, s.corrupt(h.Step, "bucket %s holds %d bytes, the header says %d", name, total, 4*h.ArenaLen[i])
		}
	}
	return out, nil
}

// checkBody hashes the chunks (the four arenas in parallel), optionally decoding them into
// dst's arenas, and compares with the header's sha256; it returns the arena sums.
func (s *Store) checkBody(h *api.CheckpointHeader, chunks *[numArenas][][]byte, dst *Checkpoint) (sums [numArenas][32]byte, err error) {
	var dsts [numArenas][]float32
	if dst != nil {
		dsts = dst.arenas()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var faults []string
	for i := range chunks {
		wg.Go(func() {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					faults = append(faults, fmt.Sprintf("bucket %s unreadable (%v)", arenaNames[i], r))
					mu.Unlock()
				}
			}()
			d := sha256.New()
			off := 0
			var buf []byte
			for _, v := range chunks[i] {
				b := v
				switch {
				case dsts[i] != nil && littleEndianHost:
					b = viewBytes(dsts[i])[off : off+len(v)]
					s.readChunk(b, v)
				case dsts[i] != nil:
					decodeLE(dsts[i], off, v)
				default:
					if len(buf) < len(v) {
						buf = make([]byte, len(v))
					}
					b = buf[:len(v)]
					s.readChunk(b, v)
				}
				d.Write(b)
				off += len(v)
			}
			d.Sum(sums[i][:0])
		})
	}
	wg.Wait()
	if len(faults) > 0 {
		return sums, s.corrupt(h.Step, "%s", faults[0])
	}
	if got := bodySum(h, &sums); !bytes.Equal(got[:], h.Sha256) {
		return sums, s.corrupt(h.Step, "body hashes to sha256 %x, the header says %x", got, h.Sha256)
	}
	return sums, nil
}

// readChunk copies v, a value bbolt returned, into dst (len(dst) == len(v)). A value in bbolt's
// map is read with pread at the same file offset: large reads with the kernel's readahead,
// where touching the map faults in one 4 KiB page at a time (bbolt maps the file MADV_RANDOM;
// a cold 572 MB read ran at a fifth of a plain read). The offset is v's distance from the
// map's base, valid while the read transaction holding v keeps the map in place. Values bbolt
// holds elsewhere (small inline buckets are copied to the heap), a short read, or bytes that
// disagree with the map are copied from v instead; on a truncated file that copy faults and
// the caller's guard reports corruption.
func (s *Store) readChunk(dst, v []byte) {
	if len(v) == 0 {
		return
	}
	if addr, base := uintptr(unsafe.Pointer(&v[0])), s.db.Info().Data; addr >= base {
		n, _ := s.rf.ReadAt(dst, int64(addr-base))
		if k := min(len(v), 64); n == len(dst) && bytes.Equal(dst[:k], v[:k]) {
			return
		}
	}
	copy(dst, v)
}

// Get reads checkpoint step, verifying every byte against its sha256 (ErrNotFound,
// ErrCorruptCheckpoint). It holds one read transaction while it copies (about 0.5 s for the
// cifar10 preset's 572 MB), which never blocks a writer in the same process.
func (s *Store) Get(step int64) (*Checkpoint, error) {
	var c *Checkpoint
	err := s.view(fmt.Sprintf("step %d", step), func(tx *bolt.Tx) error {
		h, cb, err := s.loadHeader(tx, step)
		if err != nil {
			return err
		}
		chunks, err := s.chunks(cb, h)
		if err != nil {
			return err
		}
		c = fromHeader(h)
		_, err = s.checkBody(h, &chunks, c)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Verify checks checkpoint step without keeping it: header, every bucket and chunk, sha256.
func (s *Store) Verify(step int64) error {
	_, err := s.VerifyState(step)
	return err
}

// VerifyState checks checkpoint step as Verify does and returns its state hash (hex; see
// StateHash): equal for checkpoints of equal state whatever generation wrote them.
func (s *Store) VerifyState(step int64) (string, error) {
	var state [32]byte
	err := s.view(fmt.Sprintf("step %d", step), func(tx *bolt.Tx) error {
		h, cb, err := s.loadHeader(tx, step)
		if err != nil {
			return err
		}
		chunks, err := s.chunks(cb, h)
		if err != nil {
			return err
		}
		sums, err := s.checkBody(h, &chunks, nil)
		if err != nil {
			return err
		}
		state = stateSum(h, &sums)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(state[:]), nil
}

// index returns all stored steps and the committed sha256 of each committed one, ascending.
func (s *Store) index() (steps []int64, committed map[int64][]byte, err error) {
	committed = map[int64][]byte{}
	err = s.view("index", func(tx *bolt.Tx) error {
		if root := tx.Bucket(bucketCheckpoints); root != nil {
			if err := root.ForEach(func(k, v []byte) error {
				if step, ok := keyStep(k); ok && v == nil {
					steps = append(steps, step)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if cb := tx.Bucket(bucketCommitted); cb != nil {
			return cb.ForEach(func(k, v []byte) error {
				if step, ok := keyStep(k); ok {
					committed[step] = bytes.Clone(v)
				}
				return nil
			})
		}
		return nil
	})
	return steps, committed, err
}

// List describes every stored checkpoint in step order from its header (nothing is hashed;
// use Verify). A checkpoint whose header is unreadable is listed with Info.Err set.
func (s *Store) List() ([]Info, error) {
	steps, committed, err := s.index()
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(steps))
	for _, step := range steps {
		info := Info{Step: step, Committed: committed[step] != nil}
		err := s.view(fmt.Sprintf("step %d", step), func(tx *bolt.Tx) error {
			h, _, err := s.loadHeader(tx, step)
			if err != nil {
				return err
			}
			info.Generation, info.Preset, info.ConfigHash, info.RNG = h.Generation, h.Preset, h.ConfigHash, h.Rng
			info.SHA256 = hex.EncodeToString(h.Sha256)
			for _, n := range h.ArenaLen {
				info.Bytes += 4 * int64(n)
			}
			return nil
		})
		info.Err = err
		out = append(out, info)
	}
	return out, nil
}

// Latest returns the newest checkpoint, verified; it does not fall back (see LatestVerified).
func (s *Store) Latest() (*Checkpoint, error) {
	steps, _, err := s.index()
	if err != nil {
		return nil, err
	}
	if len(steps) == 0 {
		return nil, fmt.Errorf("checkpoint: %s holds %w", s.path, ErrNoneYet)
	}
	return s.Get(steps[len(steps)-1])
}

// LatestVerified returns the newest checkpoint, committed or not, that verifies, skipping
// corrupt ones; ErrNotFound if none does.
func (s *Store) LatestVerified() (*Checkpoint, error) {
	steps, _, err := s.index()
	if err != nil {
		return nil, err
	}
	return s.newestGood(steps, nil)
}

// LatestCommitted returns the newest committed checkpoint that verifies and matches the sha256
// it was committed with, skipping corrupt ones; ErrNotFound if none does. This is the restart
// point when no coordinator names one.
func (s *Store) LatestCommitted() (*Checkpoint, error) {
	steps, committed, err := s.index()
	if err != nil {
		return nil, err
	}
	steps = slices.DeleteFunc(steps, func(st int64) bool { return committed[st] == nil })
	return s.newestGood(steps, committed)
}

// newestGood is the newest of steps that verifies (and, with committed, matches its committed
// sha256). Its ErrNotFound says which case it is: a file that holds no checkpoint (ErrNoneYet,
// "holds no checkpoint yet"), none of steps committed ("holds no committed checkpoint"), or
// every one damaged ("holds no verified checkpoint").
func (s *Store) newestGood(steps []int64, committed map[int64][]byte) (*Checkpoint, error) {
	if len(steps) == 0 {
		if committed != nil {
			if all, _, err := s.index(); err == nil && len(all) > 0 {
				return nil, fmt.Errorf("checkpoint: %s holds no committed checkpoint: %w", s.path, ErrNotFound)
			}
		}
		return nil, fmt.Errorf("checkpoint: %s holds %w", s.path, ErrNoneYet)
	}
	for i := len(steps) - 1; i >= 0; i-- {
		c, err := s.Get(steps[i])
		if errors.Is(err, ErrCorruptCheckpoint) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if committed != nil && hex.EncodeToString(committed[steps[i]]) != c.SHA256 {
			continue
		}
		return c, nil
	}
	return nil, fmt.Errorf("checkpoint: %s holds no verified checkpoint: %w", s.path, ErrNotFound)
}

// Committed returns the committed steps in ascending order.
func (s *Store) Committed() ([]int64, error) {
	steps, committed, err := s.index()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(steps, func(st int64) bool { return committed[st] == nil }), nil
}

// MarkCommitted records that the coordinator committed checkpoint step (all ranks agreed on
// its sha256). ErrNotFound if it is not stored; the header must be readable.
func (s *Store) MarkCommitted(step int64) error {
	if s.readOnly {
		return fmt.Errorf("checkpoint: mark step %d committed in %s: %w", step, s.path, ErrReadOnly)
	}
	return s.named(fmt.Sprintf("mark step %d committed in", step), s.update(func(tx *bolt.Tx) error {
		h, _, err := s.loadHeader(tx, step)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketCommitted).Put(stepKey(step), h.Sha256)
	}))
}

// Uncommit removes the commit mark of checkpoint step: the coordinator abandoned it (an
// operator rolled the run back to an older step), so it is no restart point any more and the
// recomputed checkpoint of the same step may replace it (Save). The data stays until then or
// until Prune drops it. Uncommitting a step that is not committed (or not stored) does nothing.
func (s *Store) Uncommit(step int64) error {
	if s.readOnly {
		return fmt.Errorf("checkpoint: uncommit step %d in %s: %w", step, s.path, ErrReadOnly)
	}
	return s.named(fmt.Sprintf("uncommit step %d in", step), s.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCommitted).Delete(stepKey(step))
	}))
}

// UncommitIf removes the commit mark of checkpoint step only if the mark records sha256Hex (the
// hex sha256 of the checkpoint's bytes, as Info.SHA256), checked and removed in one write
// transaction: a caller that listed the store and found an abandoned copy cannot uncommit a
// recomputed checkpoint of the same step committed since. It reports whether the mark was
// removed; a step not committed, or committed with another sha256, is left as it is.
func (s *Store) UncommitIf(step int64, sha256Hex string) (bool, error) {
	if s.readOnly {
		return false, fmt.Errorf("checkpoint: uncommit step %d in %s: %w", step, s.path, ErrReadOnly)
	}
	removed := false
	err := s.update(func(tx *bolt.Tx) error {
		cm := tx.Bucket(bucketCommitted)
		mark := cm.Get(stepKey(step))
		if mark == nil || hex.EncodeToString(mark) != sha256Hex {
			return nil
		}
		removed = true
		return cm.Delete(stepKey(step))
	})
	return removed, s.named(fmt.Sprintf("uncommit step %d in", step), err)
}

// Prune deletes checkpoints in one write transaction and returns the deleted steps. It keeps
// the newest keep committed checkpoints, every committed checkpoint whose step is a multiple of
// milestoneEvery (if > 0), and the newest keep uncommitted checkpoints newer than the newest
// committed one (in flight: the coordinator may still commit them); everything else goes.
// Freed pages are reused by later saves, so the file stays near (keep + 2) checkpoints.
// Prune panics if keep < 1 or milestoneEvery < 0.
func (s *Store) Prune(keep int, milestoneEvery int64) ([]int64, error) {
	if keep < 1 || milestoneEvery < 0 {
		panic(fmt.Sprintf("checkpoint: Prune(keep=%d, milestoneEvery=%d): need keep >= 1, milestoneEvery >= 0", keep, milestoneEvery))
	}
	if s.readOnly {
		return nil, fmt.Errorf("checkpoint: prune %s: %w", s.path, ErrReadOnly)
	}
	var removed []int64
	err := s.update(func(tx *bolt.Tx) error {
		removed = removed[:0]
		root, cm := tx.Bucket(bucketCheckpoints), tx.Bucket(bucketCommitted)
		var steps []int64
		if err := root.ForEach(func(k, v []byte) error {
			if step, ok := keyStep(k); ok && v == nil {
				steps = append(steps, step)
			}
			return nil
		}); err != nil {
			return err
		}
		var committed, pending []int64
		for _, st := range steps {
			if cm.Get(stepKey(st)) != nil {
				committed = append(committed, st)
			}
		}
		newest := int64(-1)
		if len(committed) > 0 {
			newest = committed[len(committed)-1]
		}
		for _, st := range steps {
			if st > newest && cm.Get(stepKey(st)) == nil {
				pending = append(pending, st)
			}
		}
		keepSet := map[int64]bool{}
		for _, st := range committed[max(0, len(committed)-keep):] {
			keepSet[st] = true
		}
		for _, st := range pending[max(0, len(pending)-keep):] {
			keepSet[st] = true
		}
		for _, st := range committed {
			if milestoneEvery > 0 && st%milestoneEvery == 0 {
				keepSet[st] = true
			}
		}
		for _, st := range steps {
			if keepSet[st] {
				continue
			}
			if err := root.DeleteBucket(stepKey(st)); err != nil {
				return damagedBucket(st, err)
			}
			if err := cm.Delete(stepKey(st)); err != nil {
				return err
			}
			removed = append(removed, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: prune %s: %w", s.path, err)
	}
	return removed, nil
}

// Compact rewrites the file at path without free pages and returns its sizes in bytes before
// and after. The copy (bbolt.Compact into path+".compact", every page filled) is cut to its
// high-water mark, the pages its metadata names: bbolt itself leaves a new file at its map size
// (the next power of two up to 16 MiB, then 16 MiB past the data), which made an 8.0 MB file
// 8.4 MB. The copy replaces path (fsync, rename, directory fsync) only when it is smaller;
// otherwise it is removed and path is left byte for byte as it was (after == before). It holds
// the file's lock throughout, so it fails with ErrInUse while a trainer has the file open.
func Compact(path string, opts Options) (before, after int64, err error) {
	opts.ReadOnly = false
	src, err := Open(path, opts)
	if err != nil {
		return 0, 0, err
	}
	defer src.Close()
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("checkpoint: compact %s: %w", path, err)
	}
	before = fi.Size()
	tmp := path + ".compact"
	_ = os.Remove(tmp)
	fail := func(err error) (int64, int64, error) {
		os.Remove(tmp)
		return 0, 0, fmt.Errorf("checkpoint: compact %s: %w", path, err)
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: DefaultLockTimeout, InitialMmapSize: mmapSize(path)})
	if err != nil {
		return fail(err)
	}
	if err := bolt.Compact(dst, src.db, 256<<20); err != nil {
		dst.Close()
		return fail(err)
	}
	var hwm int64 // bytes the copy's pages take: its meta page's high-water mark times the page size
	if err := dst.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil }); err != nil {
		dst.Close()
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		return fail(err)
	}
	if hwm >= before {
		// Nothing to gain: the file is as small as a copy would be (or smaller); keep it.
		os.Remove(tmp)
		return before, before, nil
	}
	if err := cutAndSync(tmp, hwm); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	syncDir(path)
	return before, hwm, nil
}

// cutAndSync truncates the file at path to size bytes and fsyncs it.
func cutAndSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
