package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The prepared format, written once by Prepare (`ddpm dataset prepare`) and memory-mapped by
// trainers:
//
//	DIR/index.json        Index: count, shape, fingerprint, and per shard its file, count and sha256
//	DIR/shard-NNNNN.bin   a 32-byte header, then count uint8 CHW images back to back, then (when
//	                      labelled) count little-endian int32 labels
//
// The header is the magic "DDPMSHD1", then little-endian uint32 count, c, h, w, flags (bit 0:
// labels present) and a reserved 0. Every shard but the last holds Index.PerShard records.
const (
	indexName    = "index.json"
	preparedKind = "ddpm-prepared"
	preparedVer  = 1
	shardMagic   = "DDPMSHD1"
	shardHeader  = 32
	// The largest record shape openPrepared accepts from index.json.
	maxPreparedChannels = 4
	maxPreparedSide     = 1 << 14
	flagLabels          = 1
	defaultShardB       = 256 << 20
)

// Index is the index.json of a prepared directory.
type Index struct {
	Format       string   `json:"format"`  // "ddpm-prepared"
	Version      int      `json:"version"` // 1
	Name         string   `json:"name"`    // the source's Dataset.Name
	SourceFormat string   `json:"source_format"`
	Source       string   `json:"source"`
	Split        string   `json:"split,omitempty"`
	Count        int      `json:"count"`
	Shape        [3]int   `json:"shape"` // c, h, w
	Labeled      bool     `json:"labeled"`
	Fingerprint  string   `json:"fingerprint"` // CanonicalHash of the content, equal to the source's
	PerShard     int      `json:"per_shard"`
	Skipped      []string `json:"skipped,omitempty"` // records the source dropped with SkipBad
	Shards       []Shard  `json:"shards"`
}

// Shard describes one shard file.
type Shard struct {
	File   string `json:"file"`
	Count  int    `json:"count"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ErrExists: Prepare's output directory already exists (nothing is overwritten).
var ErrExists = errors.New("output exists")

// preparedIndex reads the index.json of the prepared directory dir; ok is false when dir holds
// none that parses as one (its shards are not checked).
func preparedIndex(dir string) (idx Index, ok bool) {
	raw, err := os.ReadFile(filepath.Join(dir, indexName))
	if err != nil || json.Unmarshal(raw, &idx) != nil || idx.Format != preparedKind {
		return Index{}, false
	}
	return idx, true
}

// ErrUnwritable: Prepare cannot create its output directory (a read-only mount, a folder of
// another user, a file where a folder should be).
var ErrUnwritable = errors.New("output folder cannot be created")

// CheckPrepareOut returns what Prepare would meet at out before it decodes anything: ErrExists
// when out exists, ErrUnwritable when no folder can be created at the nearest existing folder
// above it (Prepare creates the missing ones). Callers check it before opening a source whose
// decoding takes long. It creates nothing that it leaves behind.
func CheckPrepareOut(out string) error {
	out = filepath.Clean(out)
	if _, err := os.Lstat(out); err == nil {
		if idx, ok := preparedIndex(out); ok {
			// A prepare run again: the data is there, ready to train on.
			return fmt.Errorf("%w: %s holds a prepared dataset already (%s, %d images), which runs take as it is; choose a new --out to prepare again",
				ErrExists, out, idx.Name, idx.Count)
		}
		return fmt.Errorf("%w: %s: refusing to overwrite; choose a new --out", ErrExists, out)
	}
	dir := filepath.Dir(out)
	for {
		st, err := os.Stat(dir)
		if err == nil && !st.IsDir() {
			return fmt.Errorf("%w: %s: %s is a file, not a folder", ErrUnwritable, out, dir)
		}
		if err == nil {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			return fmt.Errorf("%w: %s: %v", ErrUnwritable, out, err)
		}
		dir = up
	}
	probe, err := os.MkdirTemp(dir, ".prepare-probe-*")
	if err != nil {
		if pe, ok := err.(*os.PathError); ok {
			err = pe.Err
		}
		return fmt.Errorf("%w: %s: cannot create a folder in %s (%v)", ErrUnwritable, out, dir, err)
	}
	// A prepare starting at once may have removed the empty probe already (see
	// RemoveInterrupted): the folder could be made, which is all the probe asks.
	if err := os.Remove(probe); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// prepareLock is the file inside a prepare's temporary folder on which the writing process
// holds an exclusive flock(2) until the folder is renamed into place or removed: a temporary
// folder whose lock can be taken was left by a process that is gone (killed, or its machine
// down; the kernel releases the lock with the process, and NFS with the client's lease). Where
// flock does not reach across hosts (NFS mounted with local_lock=flock, local_lock=all or nolock,
// some FUSE file systems) a prepare on another host holding the lock is not seen, and its
// temporary folder would be removed under it: prepares into one out must then not run on two
// hosts at once (README says so).
const prepareLock = ".prepare.lock"

// tmpPrefix is the name prefix of Prepare's temporary folder beside out.
func tmpPrefix(out string) string { return "." + filepath.Base(filepath.Clean(out)) + ".tmp" }

// Leftovers is what RemoveInterrupted found beside a prepare's --out.
type Leftovers struct {
	Tmps   []string // temporary folders of prepares that are gone, removed
	Probes []string // empty probe folders of CheckPrepareOut, removed
	// Unmarked are temporary folders without a lock file, untouched for over unmarkedAge: made
	// by a version before the lock, whose writer nothing proves gone (they stay; the caller
	// may say so).
	Unmarked []string
}

// unmarkedAge is how long a temporary folder without a lock file must have been untouched to
// be listed in Leftovers.Unmarked. This version's folders are without one only for the
// moments after their creation and before their rename (see lockTmp), each of which changes
// the folder's modification time.
const unmarkedAge = time.Minute

// RemoveInterrupted removes what prepares into out that are gone left behind and returns
// what it found: each temporary folder beside out ("." + base(out) + ".tmp" and os.MkdirTemp's
// digits) whose lock (prepareLock) no process holds, and each empty ".prepare-probe-*" folder of
// CheckPrepareOut in the nearest existing folder above out. The temporary folder of a prepare
// still running is locked and stays (the prepare that finishes second is refused: ErrExists),
// as does one without a lock file (Leftovers.Unmarked). A folder that cannot be removed is an
// error (one line) naming it, after the others were tried.
func RemoveInterrupted(out string) (Leftovers, error) {
	var found Leftovers
	out = filepath.Clean(out)
	var errs []error // one line in all, for the caller's warning
	parent := filepath.Dir(out)
	entries, _ := os.ReadDir(parent) // a missing parent holds nothing to remove
	for _, e := range entries {
		// os.MkdirTemp's names: the prefix, then decimal digits.
		digits, ok := strings.CutPrefix(e.Name(), tmpPrefix(out))
		if !e.IsDir() || !ok || digits == "" || strings.Trim(digits, "0123456789") != "" {
			continue
		}
		p := filepath.Join(parent, e.Name())
		lock, unmarked, err := lockIfGone(p)
		if err == nil && lock != nil {
			err = os.RemoveAll(p)
			lock.Close() // after the folder (and the lock file in it) is gone
			if err == nil {
				found.Tmps = append(found.Tmps, p)
			}
		}
		if unmarked {
			if st, err := os.Stat(p); err == nil && time.Since(st.ModTime()) > unmarkedAge {
				found.Unmarked = append(found.Unmarked, p)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, unwrapPathError(err)))
		}
	}
	dir := parent
	for {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			break
		}
		dir = up
	}
	probes, _ := filepath.Glob(filepath.Join(dir, ".prepare-probe-*"))
	for _, p := range probes {
		// An empty folder: CheckPrepareOut's probe, whose remover was killed (or is about to
		// remove it, and takes its absence as done). rmdir refuses anything else.
		if os.Remove(p) == nil {
			found.Probes = append(found.Probes, p)
		}
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Error()
		}
		return found, errors.New(strings.Join(msgs, "; "))
	}
	return found, nil
}

// lockIfGone returns the lock file of the temporary folder tmp, locked, when the prepare that
// made tmp is gone: its lock file exists and this process could take the lock; the caller
// closes it once tmp is removed. nil when the lock is held (a prepare writes into tmp), when tmp
// has no lock file (then unmarked is true: nothing proves its writer gone), or when the lock
// file was removed or replaced while this process took the lock (a prepare finishing, another
// cleaner).
func lockIfGone(tmp string) (lock *os.File, unmarked bool, err error) {
	lp := filepath.Join(tmp, prepareLock)
	// Read-write where this process may: on NFS, where Linux emulates flock by a byte-range lock,
	// an exclusive lock needs a descriptor open for writing (flock(2)); locally a read-only one
	// serves too, so a lock file this process may not write (another user's) is opened so.
	f, err := os.OpenFile(lp, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		f, err = os.Open(lp)
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, true, nil
	} else if err != nil {
		return nil, false, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	st, err1 := os.Stat(lp)
	fst, err2 := f.Stat()
	if err1 != nil || err2 != nil || !os.SameFile(st, fst) {
		f.Close()
		return nil, false, nil
	}
	return f, false, nil
}

// lockTmp marks the new temporary folder tmp as this process's: it creates the lock file
// under another name, takes its flock and only then gives it the name prepareLock, so that a
// cleaner (RemoveInterrupted) never meets it unlocked while this process lives. The lock is
// released when the process ends, however it ends. nil where the file system has no flock (or
// the file cannot be made): tmp then has no lock file and, as before the lock, nothing removes
// it but this process.
func lockTmp(tmp string) *os.File {
	next := filepath.Join(tmp, prepareLock+".new")
	f, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil || os.Rename(next, filepath.Join(tmp, prepareLock)) != nil {
		f.Close()
		os.Remove(next)
		return nil
	}
	return f
}

// mkdirTemp makes a new folder in dir named prefix and then decimal digits (the names
// RemoveInterrupted looks for, os.MkdirTemp's), with mode 0777 less the process's umask, as mkdir
// makes any folder (and a default ACL of dir applies): renamed into place it is the prepared
// folder, which trainers running as another user (the prepare ran as root in an init container,
// or as a colleague on a shared file system) must be able to read. os.MkdirTemp's 0700 kept them
// out. The error is os.Mkdir's.
func mkdirTemp(dir, prefix string) (string, error) {
	for try := 0; ; try++ {
		p := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		err := os.Mkdir(p, 0o777)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) || try == 1000 {
			return "", err
		}
	}
}

// Prepare decodes ds once into the prepared format in the new directory out, with shards of
// about shardBytes bytes (0: 256 MiB). It writes into a temporary sibling directory and renames
// it into place only when complete, so out is never left half-written; it refuses (ErrExists) if
// out exists. The folder and its files get the modes mkdir and creat give (0777 and 0666 less
// the umask), so that other users may read them as they may any folder. The result's Fingerprint equals ds.Fingerprint(); a mismatch is ErrIntegrity.
func Prepare(ds Dataset, out string, shardBytes int) (*Index, error) {
	px, ok := ds.(Pixeler)
	if !ok {
		panic("dataset: Prepare: dataset has no Pixels method")
	}
	if err := CheckPrepareOut(out); err != nil {
		return nil, err
	}
	if shardBytes <= 0 {
		shardBytes = defaultShardB
	}
	c, h, w := ds.Shape()
	d := c * h * w
	labeled := ds.Len() > 0 && ds.Label(0) >= 0
	info := Info{Name: ds.Name()}
	if s, ok := ds.(*set); ok {
		info = Describe(ds)
		labeled = s.labels != nil
	}
	idx := &Index{
		Format: preparedKind, Version: preparedVer, Name: info.Name, SourceFormat: info.Format,
		Source: info.Source, Split: info.Split, Count: ds.Len(), Shape: [3]int{c, h, w}, Labeled: labeled,
		PerShard: max(1, shardBytes/d), Skipped: info.Skipped,
	}
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(out)), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnwritable, out, err)
	}
	tmp, err := mkdirTemp(filepath.Dir(filepath.Clean(out)), tmpPrefix(out))
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", out, err)
	}
	lock := lockTmp(tmp)
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
		if lock != nil {
			lock.Close() // after the folder is gone: no one else removes it meanwhile
		}
	}()
	hash := newHash(c, h, w)
	const chunk = 64
	buf := make([]uint8, chunk*d)
	errs := make([]error, chunk)
	for first := 0; first < ds.Len(); first += idx.PerShard {
		count := min(idx.PerShard, ds.Len()-first)
		name := fmt.Sprintf("shard-%05d.bin", len(idx.Shards))
		f, err := os.Create(filepath.Join(tmp, name))
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", out, err)
		}
		sh := sha256.New()
		wr := io.MultiWriter(f, sh)
		var hdr [shardHeader]byte
		copy(hdr[:], shardMagic)
		flags := uint32(0)
		if labeled {
			flags = flagLabels
		}
		for k, v := range []uint32{uint32(count), uint32(c), uint32(h), uint32(w), flags} {
			binary.LittleEndian.PutUint32(hdr[8+4*k:], v)
		}
		wr.Write(hdr[:])
		labels := make([]byte, 0, 4*count)
		for s := first; s < first+count; s += chunk {
			m := min(chunk, first+count-s)
			parallelFor(m, func(k int) { errs[k] = px.Pixels(s+k, buf[k*d:(k+1)*d]) })
			for k := 0; k < m; k++ {
				if errs[k] != nil {
					f.Close()
					return nil, errs[k]
				}
				lbl := ds.Label(s + k)
				hash.add(lbl, buf[k*d:(k+1)*d])
				labels = binary.LittleEndian.AppendUint32(labels, uint32(int32(lbl)))
			}
			if _, err := wr.Write(buf[:m*d]); err != nil {
				f.Close()
				return nil, fmt.Errorf("prepare %s: %w", out, err)
			}
		}
		if labeled {
			wr.Write(labels)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("prepare %s: %w", out, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", out, err)
		}
		size := int64(shardHeader + count*d)
		if labeled {
			size += int64(4 * count)
		}
		idx.Shards = append(idx.Shards, Shard{File: name, Count: count, Bytes: size, SHA256: hex.EncodeToString(sh.Sum(nil))})
	}
	idx.Fingerprint = hash.hex()
	if want := ds.Fingerprint(); idx.Fingerprint != want {
		return nil, fmt.Errorf("%w: %s: the written content hashes to %s, the source's fingerprint is %s", ErrIntegrity, out, idx.Fingerprint, want)
	}
	js, _ := json.MarshalIndent(idx, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, indexName), append(js, '\n'), 0o666); err != nil {
		return nil, fmt.Errorf("prepare %s: %w", out, err)
	}
	// The lock file stays out of the prepared folder; the lock itself is held until return.
	if lock != nil {
		if err := os.Remove(filepath.Join(tmp, prepareLock)); err != nil {
			return nil, fmt.Errorf("prepare %s: %w", out, err)
		}
	}
	if err := os.Rename(tmp, out); err != nil {
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.ENOTDIR) {
			// Made while this one decoded: a second prepare into the same --out, run at once.
			return nil, fmt.Errorf("%w: %s: made by another process while this prepare ran (a second ddpm dataset prepare into it?); refusing to overwrite; choose a new --out", ErrExists, out)
		}
		return nil, fmt.Errorf("prepare %s: %w", out, err)
	}
	done = true
	return idx, nil
}

// parallelFor runs fn(0..m-1) on GOMAXPROCS goroutines.
func parallelFor(m int, fn func(k int)) {
	var wg sync.WaitGroup
	next := make(chan int, m)
	for k := 0; k < m; k++ {
		next <- k
	}
	close(next)
	for range min(runtime.GOMAXPROCS(0), m) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range next {
				fn(k)
			}
		}()
	}
	wg.Wait()
}

// preparedReader serves records from memory-mapped shards. The mappings live as long as the
// reader (they are unmapped when it is garbage-collected).
type preparedReader struct {
	dir      string
	idx      *Index
	maps     [][]byte // whole shard files
	checks   []shardCheck
	d        int
	perShard int
}

// shardCheck is the outcome of one shard's sha256 check, made at most once per reader.
type shardCheck struct {
	once sync.Once
	err  error
}

// pixels copies record i out of its shard's map. The first read from a shard checks that
// shard's sha256 against index.json (once per process; a shard of 256 MiB costs about 0.15 s
// with SHA-NI), so that a damaged copy fails the first batch that touches it with ErrIntegrity
// instead of being trained on; later reads cost one atomic load.
func (r *preparedReader) pixels(i int, dst []uint8) error {
	s, k := i/r.perShard, i%r.perShard
	if err := r.checkShard(s); err != nil {
		return err
	}
	off := shardHeader + k*r.d
	copy(dst, r.maps[s][off:off+r.d])
	return nil
}

// checkShard returns the result of shard s's sha256 check, computing it on first use.
func (r *preparedReader) checkShard(s int) error {
	c := &r.checks[s]
	c.once.Do(func() {
		sh := r.idx.Shards[s]
		sum := sha256.Sum256(r.maps[s])
		if got := hex.EncodeToString(sum[:]); got != sh.SHA256 {
			c.err = fmt.Errorf("%w: %s: sha256 %s, index.json says %s (corrupted copy?)", ErrIntegrity, filepath.Join(r.dir, sh.File), got, sh.SHA256)
		}
	})
	return c.err
}

// verify checks every shard's sha256 against the index (each at most once per reader).
func (r *preparedReader) verify() error {
	for s := range r.idx.Shards {
		if err := r.checkShard(s); err != nil {
			return err
		}
	}
	return nil
}

// openPrepared opens a prepared directory: it checks index.json against each shard's header and
// size and maps the shards. A shard's sha256 is checked the first time a record of it is read
// (and by Verify, `ddpm dataset inspect`), not at open: a trainer pays for the shards it reads,
// as it reads them.
func openPrepared(dir string, opts Options) (Dataset, error) {
	ip := filepath.Join(dir, indexName)
	raw, err := os.ReadFile(ip)
	if perm := unreadable(ip, err); perm != nil {
		return nil, perm
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, ip, unwrapPathError(err))
	}
	var idx Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, ip, err)
	}
	if idx.Format != preparedKind || idx.Version != preparedVer {
		return nil, fmt.Errorf("%w: %s: format %q version %d, want %q version %d", ErrFormat, ip, idx.Format, idx.Version, preparedKind, preparedVer)
	}
	c, h, w := idx.Shape[0], idx.Shape[1], idx.Shape[2]
	if c <= 0 || h <= 0 || w <= 0 || idx.PerShard <= 0 || idx.Count <= 0 {
		return nil, fmt.Errorf("%w: %s: shape %v, per_shard %d, count %d", ErrFormat, ip, idx.Shape, idx.PerShard, idx.Count)
	}
	if opts.Resolution != 0 && (opts.Resolution != h || opts.Resolution != w) {
		return nil, fmt.Errorf("%w: %s: prepared at %dx%d, resolution %d asked; prepare again at that resolution",
			ErrOption, dir, h, w, opts.Resolution)
	}
	if idx.Split != "" && opts.splitAsked && opts.Split != idx.Split {
		return nil, fmt.Errorf("%w: %s: holds the %s split, %s asked", ErrOption, dir, idx.Split, opts.Split)
	}
	// A copy of data without splits (an image folder, an LSUN LMDB) has none either: a test
	// split asked of it is refused as of its source, not answered with all its images.
	if idx.Split == "" {
		if err := checkNoSplit(dir, "a prepared copy of "+sourceKind(idx.SourceFormat), opts); err != nil {
			return nil, err
		}
	}
	// index.json's numbers are bounded before any product or allocation uses them: a record
	// of c*h*w bytes and a shard of per_shard records plus labels must be representable, and
	// the labels grow with the shards actually mapped, not with what count claims.
	if c > maxPreparedChannels || h > maxPreparedSide || w > maxPreparedSide {
		return nil, fmt.Errorf("%w: %s: shape %v: at most %d channels of %dx%d", ErrFormat, ip, idx.Shape, maxPreparedChannels, maxPreparedSide, maxPreparedSide)
	}
	d := c * h * w
	if idx.PerShard > (math.MaxInt64-shardHeader)/(d+4) || idx.PerShard > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %s: per_shard %d records of %d bytes do not fit a shard", ErrFormat, ip, idx.PerShard, d)
	}
	r := &preparedReader{dir: dir, idx: &idx, d: d, perShard: idx.PerShard, checks: make([]shardCheck, len(idx.Shards))}
	var labels []int32
	if idx.Labeled {
		labels = make([]int32, 0, min(idx.Count, 1<<20))
	}
	total := 0
	for s, sh := range idx.Shards {
		p := filepath.Join(dir, sh.File)
		if sh.Count < 1 || sh.Count > idx.PerShard {
			for _, mm := range r.maps {
				syscall.Munmap(mm)
			}
			return nil, fmt.Errorf("%w: %s: %d records, index.json's per_shard is %d", ErrFormat, p, sh.Count, idx.PerShard)
		}
		m, err := mapShard(p, sh, c, h, w, idx.Labeled)
		if err != nil {
			for _, mm := range r.maps {
				syscall.Munmap(mm)
			}
			return nil, err
		}
		// Records are found by i / per_shard, so every shard but the last holds exactly
		// per_shard records and the last one 1..per_shard.
		if (s < len(idx.Shards)-1 && sh.Count != idx.PerShard) || sh.Count < 1 || sh.Count > idx.PerShard {
			syscall.Munmap(m)
			for _, mm := range r.maps {
				syscall.Munmap(mm)
			}
			return nil, fmt.Errorf("%w: %s: %d records, index.json's per_shard is %d", ErrFormat, p, sh.Count, idx.PerShard)
		}
		r.maps = append(r.maps, m)
		if idx.Labeled {
			lb := m[shardHeader+sh.Count*d:]
			for k := 0; k < sh.Count; k++ {
				labels = append(labels, int32(binary.LittleEndian.Uint32(lb[4*k:])))
			}
		}
		total += sh.Count
	}
	if total != idx.Count {
		return nil, fmt.Errorf("%w: %s: shards hold %d records, count says %d", ErrFormat, ip, total, idx.Count)
	}
	runtime.AddCleanup(r, func(maps [][]byte) {
		for _, m := range maps {
			syscall.Munmap(m)
		}
	}, r.maps)
	return &set{
		r: r, n: idx.Count, c: c, h: h, w: w, labels: labels,
		name: idx.Name, format: "prepared", split: idx.Split, source: dir,
		skipped: idx.Skipped, fp: idx.Fingerprint,
	}, nil
}

// mapShard checks a shard's size and header against the index and maps it read-only.
func mapShard(p string, sh Shard, c, h, w int, labeled bool) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIntegrity, p, unwrapPathError(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIntegrity, p, err)
	}
	want := int64(shardHeader + sh.Count*c*h*w)
	if labeled {
		want += int64(4 * sh.Count)
	}
	if st.Size() != want || sh.Bytes != want {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d for %d records of %dx%dx%d (truncated copy?)", ErrIntegrity, p, st.Size(), want, sh.Count, c, h, w)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, int(want), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: mmap: %v", ErrFormat, p, err)
	}
	var hdrWant [shardHeader]byte
	copy(hdrWant[:], shardMagic)
	flags := uint32(0)
	if labeled {
		flags = flagLabels
	}
	for k, v := range []uint32{uint32(sh.Count), uint32(c), uint32(h), uint32(w), flags} {
		binary.LittleEndian.PutUint32(hdrWant[8+4*k:], v)
	}
	if string(m[:shardHeader]) != string(hdrWant[:]) {
		syscall.Munmap(m)
		return nil, fmt.Errorf("%w: %s: shard header disagrees with index.json (count %d, shape %dx%dx%d)", ErrFormat, p, sh.Count, c, h, w)
	}
	return m, nil
}

// sourceKind names a prepared copy's source format for a message: "an image folder", "an LSUN
// LMDB", else "data without splits".
func sourceKind(format string) string {
	switch format {
	case "image-folder":
		return "an image folder"
	case "lsun-lmdb":
		return "an LSUN LMDB"
	}
	return "data without splits"
}
