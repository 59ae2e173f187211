package coordinator

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"ddpm/internal/localrun"
)

// DamagedStoreError is why a replica will not start on its --data-dir: raft.db or the snapshots
// beside it cannot be read back whole (a truncated or zeroed file after a full disk, an I/O
// error, a crash of the filesystem). Raft's libraries meet such data with a panic or a SIGSEGV;
// the replica checks the data before they open it. Its Error is the one line ddpm coordinator
// prints: the file, what is wrong, and the remedy. It matches ErrDamagedStore.
type DamagedStoreError struct {
	Path    string // the damaged file or directory
	DataDir string // the replica's --data-dir
	Why     string // what is wrong with it
}

func (e *DamagedStoreError) Error() string {
	return fmt.Sprintf("coordinator: %s is damaged (%s): move --data-dir %s aside and start this replica again "+
		"with the same --id and --peers, it catches up from the other replicas; a run's only replica cannot: "+
		"restore %s from a copy or start the run anew on an empty --data-dir", e.Path, e.Why, e.DataDir, e.DataDir)
}

func (e *DamagedStoreError) Unwrap() error { return ErrDamagedStore }

// StoreWriteError is why a running replica stopped: raft could not store its term or vote
// (raft.db full, an I/O error), which raft cannot go on without (it panicked there). The other
// replicas keep the run. It matches ErrStoreWrite.
type StoreWriteError struct {
	Path string // raft.db
	What string // what raft was storing
	Err  error  // the store's error
}

func (e *StoreWriteError) Error() string {
	return fmt.Sprintf("coordinator: cannot write %s (%s): %v: this replica stops, the others keep the run; "+
		"free or repair the disk and start it again (a damaged raft.db: move its --data-dir aside, the replica catches up from its peers)",
		e.Path, e.What, e.Err)
}

func (e *StoreWriteError) Unwrap() error { return ErrStoreWrite }

// MsgStoreFailing is the warning of a replica whose raft log or snapshots cannot store what it
// receives (a full disk, an I/O error): it falls behind the leader until the writes succeed
// again. Given at most once per storeWarnEvery while it lasts, flaps included (a write that
// succeeds between failures, as a small entry into a page bbolt had free, does not end it).
const MsgStoreFailing = "cannot store raft log entries: this replica falls behind the leader until its disk takes writes again"

// MsgStoreRecovered is logged after MsgStoreFailing once writes have succeeded for storeSettle
// with no failure between them.
const MsgStoreRecovered = "raft log takes writes again"

// storeWarnEvery is the least time between two MsgStoreFailing warnings.
var storeWarnEvery = time.Minute

// storeSettle is how long writes must go on succeeding, with no failure, before a replica that
// warned MsgStoreFailing says MsgStoreRecovered (a leader re-elected on a full disk stores its
// first small entry, then fails again within a second or two).
var storeSettle = 10 * time.Second

// CheckDataDir refuses a dataDir that is another of ddpm's folders, before a replica writes its
// raft.db and snapshots/ there: a ddpm local run folder (local.json, or trainer-0/checkpoints.db;
// its coordinators keep their raft data in its coordinator-I folders, which pass) or a trainer's
// folder (checkpoints.db). The error, which matches ErrNotDataDir, is one line naming the folder,
// what it is and what to give instead. Nil for any other folder, and for one that does not exist.
func CheckDataDir(dataDir string) error {
	what := localrun.FolderKind(dataDir)
	var instead string
	switch what {
	case localrun.KindRunFolder:
		instead = fmt.Sprintf("give a new folder (the run's own coordinators keep their raft data in %s)",
			filepath.Join(dataDir, "coordinator-N"))
	case localrun.KindTrainerFolder:
		instead = "give a new folder"
		if _, err := os.Stat(filepath.Join(dataDir, "raft.db")); err == nil {
			// A trainer was given this replica's folder as its --data-dir and wrote its volume
			// beside the raft data: the raft data is this replica's, the rest the trainer's.
			return notDataDirError("coordinator: --data-dir " + dataDir + " holds this replica's raft data (raft.db) and a " +
				"trainer's checkpoints.db (a trainer was given it as its --data-dir): move checkpoints.db and the trainer's " +
				"run.yaml to a folder of their own (that trainer's volume), then start this replica again")
		}
	default:
		return nil
	}
	return fmt.Errorf("coordinator: --data-dir %s: %s, %w; %s", dataDir, what, ErrNotDataDir, instead)
}

// notDataDirError is a refusal of --data-dir whose line does not read "not a coordinator's data
// dir" (a folder that is one, and a trainer's too); it matches ErrNotDataDir.
type notDataDirError string

func (e notDataDirError) Error() string { return string(e) }

// Unwrap returns ErrNotDataDir.
func (e notDataDirError) Unwrap() error { return ErrNotDataDir }

// checkRaftData checks the raft data in dataDir before raft's libraries open it (they panic or
// fault on damaged data): raft.db's size against the pages its meta page counts, bbolt's
// consistency check of every page, and that a readable snapshot reaches the entry before the
// log's first (raft compacts the log behind its snapshots). Nil when dataDir holds no raft.db
// yet. The errors: a *DamagedStoreError, or inUse's when another process holds raft.db.
func checkRaftData(dataDir string) error {
	dbPath := filepath.Join(dataDir, "raft.db")
	fi, err := os.Stat(dbPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return &DamagedStoreError{Path: dbPath, DataDir: dataDir, Why: err.Error()}
	case fi.Size() == 0:
		// bbolt writes its first pages at creation: an empty file lost them, and with them
		// the replica's term and vote.
		return &DamagedStoreError{Path: dbPath, DataDir: dataDir, Why: "the file is empty"}
	}
	if err := checkBolt(dbPath, dataDir, fi.Size()); err != nil {
		return err
	}
	return checkSnapshots(dbPath, dataDir)
}

// checkBolt opens dbPath read-only and checks it: the file holds every page its meta page
// counts (bbolt maps the file and would fault past its end), then bbolt's own check of every
// reachable page, which reports a damaged page where a read would panic.
func checkBolt(dbPath, dataDir string, size int64) (err error) {
	damaged := func(why string) error { return &DamagedStoreError{Path: dbPath, DataDir: dataDir, Why: why} }
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged(fmt.Sprint(r))
		}
	}()
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: raftDBLockTimeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return inUse(dbPath, dataDir)
	case err != nil:
		return damaged(err.Error())
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if need := tx.Size(); size < need {
			return damaged(fmt.Sprintf("%d bytes long, its pages need %d", size, need))
		}
		// bbolt's Check reads the pages through its memory map on a goroutine of its own, where
		// a key or value placed past the map by a damaged page faults and ends the process, and
		// a cycle of pages recurses until the stack overflows: it runs only on pages that passed
		// walkPages.
		if err := walkPages(dbPath, tx, db.Info().PageSize); err != nil {
			return damaged("bbolt check: " + err.Error())
		}
		var errs []string
		for e := range tx.Check() {
			if len(errs) < 3 {
				errs = append(errs, e.Error())
			}
		}
		if len(errs) > 0 {
			return damaged("bbolt check: " + strings.Join(errs, "; "))
		}
		return nil
	})
}

// checkSnapshots checks that raft will find the state its log starts after: when the log's
// first entry is past 1, a snapshot it can read (meta.json, state.bin with the CRC meta.json
// records, a state the fsm decodes) must reach the entry before it; and a replica whose every
// snapshot is unreadable cannot start at all (raft refuses it without naming one).
func checkSnapshots(dbPath, dataDir string) error {
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath,
		BoltOptions: &bolt.Options{ReadOnly: true, Timeout: raftDBLockTimeout}})
	if err != nil {
		return &DamagedStoreError{Path: dbPath, DataDir: dataDir, Why: err.Error()}
	}
	defer store.Close()
	first, err1 := store.FirstIndex()
	last, err2 := store.LastIndex()
	if err := errors.Join(err1, err2); err != nil {
		return &DamagedStoreError{Path: dbPath, DataDir: dataDir, Why: err.Error()}
	}
	snapDir := filepath.Join(dataDir, "snapshots")
	var metas []*raft.SnapshotMeta
	if _, err := os.Stat(snapDir); err == nil {
		snaps, err := raft.NewFileSnapshotStore(dataDir, 2, io.Discard)
		if err != nil {
			return &DamagedStoreError{Path: snapDir, DataDir: dataDir, Why: err.Error()}
		}
		if metas, err = snaps.List(); err != nil {
			return &DamagedStoreError{Path: snapDir, DataDir: dataDir, Why: err.Error()}
		}
		readable := false
		var reach uint64
		for _, m := range metas {
			if _, ok := readSnapshot(snaps, m.ID); ok {
				readable, reach = true, m.Index
				break
			}
		}
		switch {
		case len(metas) > 0 && !readable:
			return &DamagedStoreError{Path: filepath.Join(snapDir, metas[0].ID, "state.bin"), DataDir: dataDir,
				Why: "no snapshot can be read back (state.bin does not match the CRC its meta.json records)"}
		case last >= first && first > 1 && reach+1 < first:
			return noSnapshotReaches(snapDir, dataDir, first, reach, readable)
		}
		return nil
	}
	if last >= first && first > 1 {
		return noSnapshotReaches(snapDir, dataDir, first, 0, false)
	}
	return nil
}

// noSnapshotReaches is the error of a log starting at entry first with no readable snapshot
// reaching first-1 (the newest readable one, if any, reaches reach): it names a snapshot whose
// meta.json cannot be read when there is one, else the snapshots directory.
func noSnapshotReaches(snapDir, dataDir string, first, reach uint64, readable bool) error {
	why := fmt.Sprintf("raft.db's log starts at entry %d but no readable snapshot holds the entries before it", first)
	if readable {
		why = fmt.Sprintf("raft.db's log starts at entry %d but the newest readable snapshot ends at entry %d", first, reach)
	}
	ents, _ := os.ReadDir(snapDir)
	for i := len(ents) - 1; i >= 0; i-- { // names sort by term, index: newest last
		e := ents[i]
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		meta := filepath.Join(snapDir, e.Name(), "meta.json")
		b, err := os.ReadFile(meta)
		var m raft.SnapshotMeta
		if err == nil {
			err = json.Unmarshal(b, &m)
		}
		if err != nil {
			return &DamagedStoreError{Path: meta, DataDir: dataDir, Why: why}
		}
	}
	return &DamagedStoreError{Path: snapDir, DataDir: dataDir, Why: why}
}

// guardedStore is the raft.LogStore and raft.StableStore of a Node: raft-boltdb's store, with
// write failures made plain. Raft panics when it cannot store its term or vote; once armed, the
// guard instead hands a *StoreWriteError to onFatal and holds raft's goroutine until release
// is closed (the node shutting down), then ends it. A failed log write, which raft survives
// (a follower answers the leader with a failure and falls behind), is warned about at most once
// per storeWarnEvery and shows in Failing until a write succeeds.
type guardedStore struct {
	*raftboltdb.BoltStore
	path    string
	log     *slog.Logger
	onFatal func(error)
	release chan struct{}

	now func() time.Time

	mu         sync.Mutex
	armed      bool
	failingErr error     // the last log or snapshot write's error, nil once one succeeds
	warned     time.Time // when MsgStoreFailing was last given
	degraded   bool      // MsgStoreFailing given, MsgStoreRecovered not yet
	okSince    time.Time // while degraded: the first success since the last failure (zero: none)
	unarmedErr error     // a term or vote write that failed before arm (raft panics on it at start)
}

func newGuardedStore(s *raftboltdb.BoltStore, path string, log *slog.Logger, onFatal func(error)) *guardedStore {
	return &guardedStore{BoltStore: s, path: path, log: log, onFatal: onFatal, release: make(chan struct{}), now: time.Now}
}

// arm makes a failed term or vote write end the replica (before: returned, as to raft's
// bootstrap, which reports it).
func (g *guardedStore) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

// Release lets a goroutine held by a failed stable write end; called before raft shuts down.
func (g *guardedStore) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

// Failing returns the error of the last raft log write when it failed, nil when it succeeded.
func (g *guardedStore) Failing() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failingErr
}

func (g *guardedStore) stable(what string, err error) error {
	if err == nil {
		return nil
	}
	g.mu.Lock()
	armed := g.armed
	if !armed {
		g.unarmedErr = &StoreWriteError{Path: g.path, What: what, Err: err}
	}
	g.mu.Unlock()
	if !armed {
		return err
	}
	g.onFatal(&StoreWriteError{Path: g.path, What: what, Err: err})
	<-g.release
	// Raft panics on the error; ending its goroutine (its deferred calls run) lets its
	// shutdown complete instead.
	runtime.Goexit()
	return err
}

// logWrite records the outcome of a write of the raft log or of a snapshot (file: what was
// written): a failure sets Failing and is warned about unless a warning was given less than
// storeWarnEvery ago in the same episode; a success clears Failing, and ends the episode
// (MsgStoreRecovered) once writes have succeeded for storeSettle with no failure between.
func (g *guardedStore) logWrite(file string, err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	switch {
	case err != nil:
		if !g.degraded || now.Sub(g.warned) >= storeWarnEvery {
			g.log.Warn(MsgStoreFailing, "file", file, "err", err.Error())
			g.warned = now
		}
		g.degraded, g.failingErr, g.okSince = true, err, time.Time{}
	case g.degraded:
		g.failingErr = nil
		if g.okSince.IsZero() {
			g.okSince = now
		} else if now.Sub(g.okSince) >= storeSettle {
			g.degraded, g.okSince = false, time.Time{}
			g.log.Info(MsgStoreRecovered, "file", file)
		}
	}
	return err
}

// Set implements raft.StableStore.
func (g *guardedStore) Set(k, v []byte) error {
	return g.stable("raft's "+string(k), g.BoltStore.Set(k, v))
}

// SetUint64 implements raft.StableStore: raft stores its current term and last vote with it.
func (g *guardedStore) SetUint64(k []byte, v uint64) error {
	return g.stable("raft's "+string(k), g.BoltStore.SetUint64(k, v))
}

// StoreLog implements raft.LogStore.
func (g *guardedStore) StoreLog(l *raft.Log) error {
	return g.logWrite(g.path, g.BoltStore.StoreLog(l))
}

// StoreLogs implements raft.LogStore.
func (g *guardedStore) StoreLogs(ls []*raft.Log) error {
	return g.logWrite(g.path, g.BoltStore.StoreLogs(ls))
}

// guardedSnapshots is the raft.SnapshotStore of a Node: raft's FileSnapshotStore, whose failures
// to create or write a snapshot (one installed from the leader on a full disk, one the replica
// takes of its own state) count as the store's (guardedStore.logWrite: MsgStoreFailing, /readyz
// 503) instead of showing only in raft's own log; a failed Create also removes the .tmp
// directory it left (raft leaves it when meta.json or state.bin cannot be written).
type guardedSnapshots struct {
	*raft.FileSnapshotStore
	dir string // DataDir/snapshots
	g   *guardedStore
}

// Create implements raft.SnapshotStore.
func (s *guardedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, c raft.Configuration,
	ci uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, c, ci, trans)
	if err != nil {
		// raft names a snapshot TERM-INDEX-MILLISECONDS and writes it as NAME.tmp first.
		left, _ := filepath.Glob(filepath.Join(s.dir, fmt.Sprintf("%d-%d-*.tmp", term, index)))
		for _, d := range left {
			os.RemoveAll(d)
		}
		return nil, s.g.logWrite(s.dir, fmt.Errorf("create snapshot %d-%d: %w", term, index, err))
	}
	return &guardedSink{SnapshotSink: sink, s: s}, nil
}

// guardedSink is a snapshot being written through guardedSnapshots.
type guardedSink struct {
	raft.SnapshotSink
	s *guardedSnapshots
}

func (k *guardedSink) Write(p []byte) (int, error) {
	n, err := k.SnapshotSink.Write(p)
	if err != nil {
		k.s.g.logWrite(k.s.dir, fmt.Errorf("write snapshot %s: %w", k.ID(), err))
	}
	return n, err
}

func (k *guardedSink) Close() error {
	err := k.SnapshotSink.Close()
	if err != nil {
		err = fmt.Errorf("write snapshot %s: %w", k.ID(), err)
	}
	k.s.g.logWrite(k.s.dir, err)
	return err
}

// removeSnapshotTemps removes the NAME.tmp directories in dataDir/snapshots: snapshots raft
// began and never finished (a full disk, a crash), which raft ignores and never removes. Called
// while the replica holds raft.db's lock, so no other process is writing one.
func removeSnapshotTemps(dataDir string) error {
	left, err := filepath.Glob(filepath.Join(dataDir, "snapshots", "*.tmp"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range left {
		errs = append(errs, os.RemoveAll(d))
	}
	return errors.Join(errs...)
}

// newReplicaOnDisk is NewReplica on the stores of dataDir, with a panic or a memory fault in
// raft's libraries while they read those stores (damage checkRaftData did not see) returned as
// a *DamagedStoreError naming raft.db; raft's panic on a term or vote store (raft.db's guard)
// could not write (a full disk) is that *StoreWriteError, with the remedy.
func newReplicaOnDisk(dataDir string, cfg ReplicaConfig, store *guardedStore) (r *Replica, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if store != nil {
				store.mu.Lock()
				werr := store.unarmedErr
				store.mu.Unlock()
				if we, ok := werr.(*StoreWriteError); ok { // raft's panic on a term or vote it could not write: no damage
					r, err = nil, fmt.Errorf("coordinator: cannot write %s (%s): %w%s", we.Path, we.What, we.Err, diskRemedy(dataDir, we.Err))
					return
				}
			}
			r, err = nil, &DamagedStoreError{Path: filepath.Join(dataDir, "raft.db"), DataDir: dataDir,
				Why: "raft could not read it back: " + fmt.Sprint(p)}
		}
	}()
	r, err = NewReplica(cfg)
	if err != nil && !strings.Contains(err.Error(), "free space on the disk") {
		err = fmt.Errorf("%w%s", err, diskRemedy(dataDir, err))
	}
	return r, err
}

// bbolt's on-disk layout (go.etcd.io/bbolt/internal/common), as walkPages reads it.
const (
	boltPageHeader   = 16   // id u64, flags u16, count u16, overflow u32
	boltElement      = 16   // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	boltBucketHeader = 16   // root pgid u64 (0: the bucket's page follows inline), sequence u64
	boltBranchPage   = 0x01 // page flags
	boltLeafPage     = 0x02 //
	boltFreelistPage = 0x10 //
	boltBucketLeaf   = 0x01 // leaf element flag: the value is a bucket
	boltNoFreelist   = ^uint64(0)
	boltMetaFreelist = 16 + 32 // offset in a meta page of the freelist's pgid (after magic, version, page size, flags, root bucket)
	boltMetaTxid     = 16 + 48 // and of the transaction id
)

// walkPages reads with plain file reads (no memory map, so damage is an error, never a fault) the
// pages of tx's view of the bbolt file path that bbolt's Check reads: the freelist page and every
// page of the bucket trees, and the inline buckets inside them. Each page must lie below the
// high-water mark (tx.Size) and be reached once (no cycle), be a branch or leaf page (the
// freelist page: a freelist), and hold its elements, keys and values within its own bytes.
func walkPages(path string, tx *bolt.Tx, pageSize int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := &pageWalk{f: f, psz: uint64(pageSize), hwm: uint64(tx.Size()) / uint64(pageSize), seen: map[uint64]bool{}}
	// The meta page tx reads (the one of its transaction id) names the freelist page.
	for id := uint64(0); id < 2; id++ {
		meta := make([]byte, boltMetaTxid+8)
		if _, err := f.ReadAt(meta, int64(id*w.psz)); err != nil {
			return fmt.Errorf("meta page %d: %w", id, err)
		}
		if binary.LittleEndian.Uint64(meta[boltMetaTxid:]) != uint64(tx.ID()) {
			continue
		}
		if fl := binary.LittleEndian.Uint64(meta[boltMetaFreelist:]); fl != boltNoFreelist {
			if err := w.freelist(fl); err != nil {
				return err
			}
		}
		break
	}
	return w.tree(uint64(tx.Cursor().Bucket().Root()), 0)
}

// pageWalk is walkPages' state: the file, its page size, the high-water mark (pages), and the
// pages reached so far.
type pageWalk struct {
	f        *os.File
	psz, hwm uint64
	seen     map[uint64]bool
	bufs     [][]byte // a page buffer per tree depth
}

// read returns page id with its overflow pages, after checking they lie below the high-water
// mark and were not reached before. The bytes are valid until the next read at the same depth.
func (w *pageWalk) read(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, fmt.Errorf("page %d: out of bounds (the file has %d pages)", id, w.hwm)
	}
	hdr := make([]byte, boltPageHeader)
	if _, err := w.f.ReadAt(hdr, int64(id*w.psz)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	over := uint64(binary.LittleEndian.Uint32(hdr[12:]))
	if id+over >= w.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages reach past the file's %d", id, over, w.hwm)
	}
	for i := id; i <= id+over; i++ {
		if w.seen[i] {
			return nil, fmt.Errorf("page %d: reached twice", i)
		}
		w.seen[i] = true
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, nil)
	}
	if need := int((over + 1) * w.psz); cap(w.bufs[depth]) < need {
		w.bufs[depth] = make([]byte, need)
	}
	p := w.bufs[depth][:(over+1)*w.psz]
	if _, err := w.f.ReadAt(p, int64(id*w.psz)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return p, nil
}

// freelist checks the freelist page id: its type and that its page ids lie within it.
func (w *pageWalk) freelist(id uint64) error {
	p, err := w.read(id, 0)
	if err != nil {
		return err
	}
	if fl := binary.LittleEndian.Uint16(p[8:]); fl != boltFreelistPage {
		return fmt.Errorf("page %d: type %#x, the meta page names it the freelist", id, fl)
	}
	n, start := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(boltPageHeader)
	if n == 0xffff { // the count overflows into the first element
		n, start = binary.LittleEndian.Uint64(p[boltPageHeader:]), boltPageHeader+8
	}
	if n > (uint64(len(p))-start)/8 {
		return fmt.Errorf("page %d: a freelist of %d ids overruns its %d bytes", id, n, len(p))
	}
	return nil
}

// tree checks the page tree rooted at page id.
func (w *pageWalk) tree(id uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: the tree is over 64 levels deep", id)
	}
	p, err := w.read(id, depth)
	if err != nil {
		return err
	}
	return w.page(id, p, depth)
}

// page checks page p (page id, or an inline bucket's page inside page id) and the pages below it.
func (w *pageWalk) page(id uint64, p []byte, depth int) error {
	if depth > 64 {
		return fmt.Errorf("page %d: the tree is over 64 levels deep", id)
	}
	size := uint64(len(p))
	if size < boltPageHeader {
		return fmt.Errorf("page %d: an inline bucket of %d bytes", id, size)
	}
	flags, n := binary.LittleEndian.Uint16(p[8:]), uint64(binary.LittleEndian.Uint16(p[10:]))
	if flags != boltBranchPage && flags != boltLeafPage {
		return fmt.Errorf("page %d: type %#x is neither branch nor leaf", id, flags)
	}
	if boltPageHeader+n*boltElement > size {
		return fmt.Errorf("page %d: %d elements overrun its %d bytes", id, n, size)
	}
	for i := range n {
		at := boltPageHeader + i*boltElement
		e := p[at : at+boltElement]
		if flags == boltBranchPage {
			pos, ksize := uint64(binary.LittleEndian.Uint32(e)), uint64(binary.LittleEndian.Uint32(e[4:]))
			if at+pos+ksize > size {
				return fmt.Errorf("page %d: branch element %d's key overruns the page", id, i)
			}
			if err := w.tree(binary.LittleEndian.Uint64(e[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		eflags := binary.LittleEndian.Uint32(e)
		pos, ksize, vsize := uint64(binary.LittleEndian.Uint32(e[4:])), uint64(binary.LittleEndian.Uint32(e[8:])), uint64(binary.LittleEndian.Uint32(e[12:]))
		end := at + pos + ksize + vsize
		if end > size {
			return fmt.Errorf("page %d: leaf element %d's key and value overrun the page", id, i)
		}
		if eflags&boltBucketLeaf == 0 {
			continue
		}
		v := p[end-vsize : end]
		if vsize < boltBucketHeader {
			return fmt.Errorf("page %d: leaf element %d: a bucket header of %d bytes", id, i, vsize)
		}
		var err error
		if root := binary.LittleEndian.Uint64(v); root == 0 {
			err = w.page(id, v[boltBucketHeader:], depth+1)
		} else {
			err = w.tree(root, depth+1)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
