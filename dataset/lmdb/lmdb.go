// Package lmdb is a thin, read-only cgo binding to Debian's liblmdb (liblmdb-dev), enough to read
// LSUN as distributed: open an environment directory, iterate the main database with a cursor, and
// look values up by key.
//
// Values returned by Get and Cursor.Next point into LMDB's read-only memory map: they are valid
// until the transaction that returned them ends, and must not be modified. Copy what must outlive
// the transaction.
//
// The environment is opened with MDB_RDONLY | MDB_NOTLS | MDB_NOLOCK: read transactions are not
// tied to OS threads (goroutines move between threads), and no lock file is written, so the data
// may sit on a read-only medium. NOLOCK is safe only while no process writes the database, which
// holds for a downloaded dataset.
package lmdb

/*
#cgo LDFLAGS: -llmdb
#include <stdlib.h>
#include <lmdb.h>

static int ddpm_get(MDB_txn *txn, MDB_dbi dbi, void *k, size_t klen, MDB_val *out) {
	MDB_val key = { klen, k };
	return mdb_get(txn, dbi, &key, out);
}

static int ddpm_next(MDB_cursor *cur, MDB_val *k, MDB_val *v) {
	return mdb_cursor_get(cur, k, v, MDB_NEXT);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"unsafe"
)

var (
	// ErrNotFound: Get found no such key (MDB_NOTFOUND).
	ErrNotFound = errors.New("lmdb: key not found")
	// ErrClosed: the environment or transaction was already closed.
	ErrClosed = errors.New("lmdb: closed")
)

// Errno is an error code of liblmdb (or a system errno), with mdb_strerror's text.
type Errno int

func (e Errno) Error() string { return "lmdb: " + C.GoString(C.mdb_strerror(C.int(e))) }

func check(rc C.int) error {
	switch rc {
	case 0:
		return nil
	case C.MDB_NOTFOUND:
		return ErrNotFound
	}
	return Errno(rc)
}

// Env is an open, read-only LMDB environment with its main database.
type Env struct {
	env *C.MDB_env
	dbi C.MDB_dbi
}

// Open opens the LMDB environment in dir (the folder holding data.mdb) read-only.
func Open(dir string) (*Env, error) {
	var env *C.MDB_env
	if err := check(C.mdb_env_create(&env)); err != nil {
		return nil, err
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	if err := check(C.mdb_env_open(env, cdir, C.MDB_RDONLY|C.MDB_NOTLS|C.MDB_NOLOCK, 0o444)); err != nil {
		C.mdb_env_close(env)
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	e := &Env{env: env}
	var txn *C.MDB_txn
	if err := check(C.mdb_txn_begin(env, nil, C.MDB_RDONLY, &txn)); err != nil {
		e.Close()
		return nil, err
	}
	rc := C.mdb_dbi_open(txn, nil, 0, &e.dbi)
	C.mdb_txn_abort(txn)
	if err := check(rc); err != nil {
		e.Close()
		return nil, fmt.Errorf("open main database of %s: %w", dir, err)
	}
	return e, nil
}

// Close releases the environment. Transactions must be ended first. Close is idempotent.
func (e *Env) Close() {
	if e.env != nil {
		C.mdb_env_close(e.env)
		e.env = nil
	}
}

// Entries is the number of key/value pairs in the main database.
func (e *Env) Entries() (int, error) {
	if e.env == nil {
		return 0, ErrClosed
	}
	var st C.MDB_stat
	var txn *C.MDB_txn
	if err := check(C.mdb_txn_begin(e.env, nil, C.MDB_RDONLY, &txn)); err != nil {
		return 0, err
	}
	defer C.mdb_txn_abort(txn)
	if err := check(C.mdb_stat(txn, e.dbi, &st)); err != nil {
		return 0, err
	}
	return int(st.ms_entries), nil
}

// Txn is a read-only transaction: a consistent snapshot. Not safe for concurrent use; each
// goroutine begins its own.
type Txn struct {
	txn *C.MDB_txn
	dbi C.MDB_dbi
}

// Begin starts a read-only transaction.
func (e *Env) Begin() (*Txn, error) {
	if e.env == nil {
		return nil, ErrClosed
	}
	var txn *C.MDB_txn
	if err := check(C.mdb_txn_begin(e.env, nil, C.MDB_RDONLY, &txn)); err != nil {
		return nil, err
	}
	return &Txn{txn: txn, dbi: e.dbi}, nil
}

// Abort ends the transaction; slices it returned become invalid. Abort is idempotent.
func (t *Txn) Abort() {
	if t.txn != nil {
		C.mdb_txn_abort(t.txn)
		t.txn = nil
	}
}

// Get returns the value stored under key (valid until the transaction ends), or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	if t.txn == nil {
		return nil, ErrClosed
	}
	var k unsafe.Pointer
	if len(key) > 0 {
		k = unsafe.Pointer(&key[0])
	}
	var v C.MDB_val
	if err := check(C.ddpm_get(t.txn, t.dbi, k, C.size_t(len(key)), &v)); err != nil {
		return nil, err
	}
	return view(v), nil
}

// Cursor iterates the main database in key order (LMDB's byte-wise order).
type Cursor struct{ cur *C.MDB_cursor }

// Cursor opens a cursor positioned before the first key.
func (t *Txn) Cursor() (*Cursor, error) {
	if t.txn == nil {
		return nil, ErrClosed
	}
	var cur *C.MDB_cursor
	if err := check(C.mdb_cursor_open(t.txn, t.dbi, &cur)); err != nil {
		return nil, err
	}
	return &Cursor{cur: cur}, nil
}

// Next returns the next key and value (valid until the transaction ends), or io.EOF after the
// last one.
func (c *Cursor) Next() (key, val []byte, err error) {
	if c.cur == nil {
		return nil, nil, ErrClosed
	}
	var k, v C.MDB_val
	if err := check(C.ddpm_next(c.cur, &k, &v)); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, nil, io.EOF
		}
		return nil, nil, err
	}
	return view(k), view(v), nil
}

// Close releases the cursor; call it before the transaction ends. Close is idempotent.
func (c *Cursor) Close() {
	if c.cur != nil {
		C.mdb_cursor_close(c.cur)
		c.cur = nil
	}
}

// view exposes LMDB memory as a Go slice without copying.
func view(v C.MDB_val) []byte {
	if v.mv_size == 0 {
		return []byte{}
	}
	return unsafe.Slice((*byte)(v.mv_data), int(v.mv_size))
}
