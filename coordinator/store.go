package coordinator

import (
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

// MsgStoreFailing is the warning of a replica whose raft log cannot store what it receives (a
// full disk, an I/O error): it falls behind the leader until the writes succeed again. Given at
// most once per storeWarnEvery while it lasts.
const MsgStoreFailing = "cannot store raft log entries: this replica falls behind the leader until its disk takes writes again"

// MsgStoreRecovered is logged when the raft log takes writes again after MsgStoreFailing.
const MsgStoreRecovered = "raft log takes writes again"

// storeWarnEvery is the least time between two MsgStoreFailing warnings.
var storeWarnEvery = time.Minute

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

	mu         sync.Mutex
	armed      bool
	failingErr error // the last log write's error, nil once one succeeds
	warned     time.Time
}

func newGuardedStore(s *raftboltdb.BoltStore, path string, log *slog.Logger, onFatal func(error)) *guardedStore {
	return &guardedStore{BoltStore: s, path: path, log: log, onFatal: onFatal, release: make(chan struct{})}
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

func (g *guardedStore) logWrite(err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err != nil:
		if g.failingErr == nil || time.Since(g.warned) >= storeWarnEvery {
			g.log.Warn(MsgStoreFailing, "file", g.path, "err", err.Error())
			g.warned = time.Now()
		}
		g.failingErr = err
	case g.failingErr != nil:
		g.failingErr = nil
		g.log.Info(MsgStoreRecovered, "file", g.path)
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
func (g *guardedStore) StoreLog(l *raft.Log) error { return g.logWrite(g.BoltStore.StoreLog(l)) }

// StoreLogs implements raft.LogStore.
func (g *guardedStore) StoreLogs(ls []*raft.Log) error { return g.logWrite(g.BoltStore.StoreLogs(ls)) }

// newReplicaOnDisk is NewReplica on the stores of dataDir, with a panic or a memory fault in
// raft's libraries while they read those stores (damage checkRaftData did not see) returned as
// a *DamagedStoreError naming raft.db.
func newReplicaOnDisk(dataDir string, cfg ReplicaConfig) (r *Replica, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			r, err = nil, &DamagedStoreError{Path: filepath.Join(dataDir, "raft.db"), DataDir: dataDir,
				Why: "raft could not read it back: " + fmt.Sprint(p)}
		}
	}()
	return NewReplica(cfg)
}
