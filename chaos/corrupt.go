package chaos

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNothingCommitted: CorruptNewestCommitted found no committed checkpoint to damage.
var ErrNothingCommitted = errors.New("chaos: no committed checkpoint")

// CorruptNewestCommitted flips one bit in the parameter arena of the newest committed checkpoint
// of the checkpoint file at path (its trainer must be stopped), as a failing disk would: the
// file still opens, and only the checkpoint's sha256 shows the damage. It returns the step and
// the byte offset it changed. The bucket layout is checkpoint/schema.go's.
func CorruptNewestCommitted(path string) (step int64, off int64, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, 0, err
	}
	var window []byte
	err = db.View(func(tx *bolt.Tx) error {
		cm := tx.Bucket([]byte("committed"))
		if cm == nil {
			return errors.New("no committed bucket")
		}
		k, _ := cm.Cursor().Last()
		if k == nil {
			return ErrNothingCommitted
		}
		step = int64(binary.BigEndian.Uint64(k))
		cb := tx.Bucket([]byte("checkpoints")).Bucket(k)
		if cb == nil {
			return fmt.Errorf("committed step %d has no checkpoint bucket", step)
		}
		pb := cb.Bucket([]byte("params"))
		if pb == nil {
			return fmt.Errorf("step %d has no params bucket", step)
		}
		_, v := pb.Cursor().First()
		if len(v) < 256 {
			return fmt.Errorf("step %d: first params chunk is %d bytes", step, len(v))
		}
		window = bytes.Clone(v[len(v)/2 : len(v)/2+64])
		return nil
	})
	db.Close()
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	i := bytes.Index(b, window)
	if i < 0 || bytes.LastIndex(b, window) != i {
		return 0, 0, fmt.Errorf("%s: the bytes of step %d's parameters are not found exactly once", path, step)
	}
	off = int64(i + 32)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b[off] ^ 0x10}, off); err != nil {
		return 0, 0, err
	}
	return step, off, f.Sync()
}
