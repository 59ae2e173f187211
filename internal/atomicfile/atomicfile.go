// Package atomicfile writes a file so that a crash of the process or of the machine leaves either
// what was there before or the complete new file, never a short one: the bytes go to a temporary
// file beside the target, which is synced, closed and then moved into place, and the directory
// is synced after the move so that the move itself survives a power cut.
//
// Readers never see a partly written file. The temporary file is hidden (".NAME.tmpNNNN" in the
// target's directory, on the same file system so the move is atomic) and is removed on every
// failure, a panic in the caller's fill function included; only a crash in the middle can leave
// one behind.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// Existing says what Write does when the target path already exists.
type Existing int

const (
	// Replace swaps an existing file at the path for the new one in one rename: a reader
	// opens either the old file or the new one.
	Replace Existing = iota
	// NoReplace leaves an existing file (or directory, or symbolic link) at the path as it is
	// and fails with an error for which errors.Is(err, fs.ErrExist) holds. The new file is put
	// in place with a hard link, which the kernel refuses if the name is taken, so two writers
	// racing for one name cannot both win. On a file system without hard links (FAT, exFAT,
	// some FUSE and SMB mounts) path is instead created exclusively and the complete temporary
	// file copied into it: still never two winners, but a crash during the copy can leave path
	// short there.
	NoReplace
)

// Write creates the file at path with the bytes fill writes, atomically (see the package doc).
//
// perm is the new file's mode before the process's umask is applied, as for os.OpenFile: 0o644
// with the usual umask 022 gives rw-r--r--, 0o600 a file only its owner reads. An existing file's
// mode is not carried over. existing says whether an existing file at path is replaced.
//
// Errors, each an *fs.PathError naming path (never the temporary file) with the system's error
// inside, so errors.Is(err, fs.ErrPermission), fs.ErrExist, syscall.ENOSPC and the like work:
//   - Op "open": the temporary file could not be made (a missing or read-only directory), or,
//     with NoReplace, path exists; that refusal reads "open PATH: file exists", as an exclusive
//     create of path would say;
//   - Op "write", "sync", "close": the temporary file could not be written (a full disk) or
//     flushed to the device;
//   - Op "rename" (Replace) or "link" (NoReplace): the move into place failed, e.g. path is a
//     directory (on a file system without hard links NoReplace's copy fails as "open", "write",
//     "sync" or "close");
//   - Op "sync" with the directory as Path: the file is in place and complete, but the
//     directory could not be synced, so a power cut might still undo the move. A file system
//     that cannot sync directories at all (EINVAL) is taken as having nothing to sync.
//
// An error fill returns is returned as it is; a write error it passes on is the "write" one
// above. On any error the temporary file is gone and path is as it was, except after a failed
// directory sync.
func Write(path string, perm fs.FileMode, existing Existing, fill func(io.Writer) error) (err error) {
	if existing == NoReplace {
		if _, err := os.Lstat(path); err == nil {
			return &fs.PathError{Op: "open", Path: path, Err: syscall.EEXIST}
		}
	}
	dir := filepath.Dir(path)
	f, err := createTemp(dir, "."+filepath.Base(path)+".tmp", perm)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: unwrapPath(err)}
	}
	placed := false
	defer func() {
		if !placed { // every failure, a panic of fill too: the caller never sees the temporary file
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := fill(pathWriter{f, path}); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return &fs.PathError{Op: "sync", Path: path, Err: unwrapPath(err)}
	}
	if err := f.Close(); err != nil {
		return &fs.PathError{Op: "close", Path: path, Err: unwrapPath(err)}
	}
	if existing == NoReplace {
		err := link(f.Name(), path)
		if noHardLinks(err) {
			err = copyNew(f.Name(), path, perm)
		} else if err != nil {
			op := "link"
			if errors.Is(err, fs.ErrExist) {
				op = "open" // the same words as the check above: it lost a race with another writer
			}
			err = &fs.PathError{Op: op, Path: path, Err: unwrapPath(err)}
		}
		if err != nil {
			return err
		}
		placed = true
		os.Remove(f.Name()) // path is the file now (the temporary name was its second link, or a copy)
	} else {
		if err := os.Rename(f.Name(), path); err != nil {
			return &fs.PathError{Op: "rename", Path: path, Err: unwrapPath(err)}
		}
		placed = true
	}
	return syncDir(dir)
}

// link is os.Link; tests replace it to play a file system without hard links.
var link = os.Link

// noHardLinks says whether err is link(2)'s answer of a file system that makes no hard links
// (FAT, exFAT, some FUSE and SMB mounts: EPERM, EOPNOTSUPP, ENOSYS), not a refusal of this link.
func noHardLinks(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

// copyNew is NoReplace on a file system without hard links: path is created exclusively
// (O_EXCL, so two writers still cannot both win) with mode perm, and the synced temporary file
// tmp is copied into it and synced. Only here can a crash leave path short; on an error path is
// removed again. Errors as Write's: "open" (path exists: "open PATH: file exists"), "write",
// "sync", "close", all naming path.
func copyNew(tmp, path string, perm fs.FileMode) error {
	src, err := os.Open(tmp)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: unwrapPath(err)}
	}
	defer src.Close()
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return &fs.PathError{Op: "open", Path: path, Err: unwrapPath(err)}
	}
	if _, err = io.Copy(dst, src); err != nil {
		err = &fs.PathError{Op: "write", Path: path, Err: unwrapPath(err)}
	} else if err = dst.Sync(); err != nil {
		err = &fs.PathError{Op: "sync", Path: path, Err: unwrapPath(err)}
	}
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = &fs.PathError{Op: "close", Path: path, Err: unwrapPath(cerr)}
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// WriteBytes is Write with data as the file's content.
func WriteBytes(path string, perm fs.FileMode, existing Existing, data []byte) error {
	return Write(path, perm, existing, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// pathWriter is the temporary file as fill sees it: its write errors name the target path.
type pathWriter struct {
	f    *os.File
	path string
}

func (w pathWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = &fs.PathError{Op: "write", Path: w.path, Err: unwrapPath(err)}
	}
	return n, err
}

// createTemp creates a new file dir/prefixNNNN for writing with mode perm less the umask
// (os.CreateTemp always uses 0600), trying fresh random names while one exists.
func createTemp(dir, prefix string, perm fs.FileMode) (*os.File, error) {
	for range 1000 {
		name := filepath.Join(dir, prefix+strconv.FormatUint(uint64(rand.Uint32()), 10))
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("no free temporary name %s* in %s", prefix, dir)
}

// SyncDir flushes dir's entries (a rename or link just made in it) to the device, so the new
// name survives a power cut; for callers that rename a file they wrote in place themselves
// (trainer.SaveFaultReserved). A file system that cannot sync a directory (EINVAL) is not an
// error. Errors are *fs.PathError naming dir.
func SyncDir(dir string) error { return syncDir(dir) }

// syncDir flushes dir's entries (the rename or link just made) to the device.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return &fs.PathError{Op: "sync", Path: dir, Err: unwrapPath(err)}
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return &fs.PathError{Op: "sync", Path: dir, Err: unwrapPath(err)}
	}
	return nil
}

// unwrapPath is the system error inside an *fs.PathError or *os.LinkError (which name the
// temporary file), else err.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// MoveNoReplace renames the file src to dst, which must not exist: dst is made a second link of
// src (link(2) refuses a name that exists, where rename(2) would replace it) and src is then
// removed; on a file system without hard links (noHardLinks) it looks for dst and renames, which
// leaves a moment in which another process could make dst. The directory of dst is synced so
// the move survives a power cut. Errors: an *os.LinkError matching fs.ErrExist when dst exists
// (src untouched); else the link, rename, remove or sync error (*fs.PathError or *os.LinkError);
// a failed remove of src undoes the link, so the data stays at src alone.
func MoveNoReplace(src, dst string) error {
	if err := link(src, dst); err != nil {
		if !noHardLinks(err) {
			return err
		}
		if _, lerr := os.Lstat(dst); lerr == nil {
			return &os.LinkError{Op: "rename", Old: src, New: dst, Err: fs.ErrExist}
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	} else if err := os.Remove(src); err != nil {
		os.Remove(dst)
		return err
	}
	return syncDir(filepath.Dir(dst))
}
