package checkpoint

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// preallocate makes the file at least size bytes with fallocate and fsyncs it. bbolt grows a
// file with ftruncate + fsync, and on ext4 every later write into that hole is many times
// slower than an append (measured: a 143 MB save took 8.9 s after bbolt's growth, 1.3 s into
// fallocated space); when the file is already large enough bbolt's growth is a no-op.
func preallocate(path string, size int64) error {
	if fi, err := os.Stat(path); err != nil || fi.Size() >= size {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0) // a second descriptor: closing it keeps bbolt's flock
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
			return nil // bbolt grows the file itself
		}
		return err
	}
	return f.Sync()
}

// startWriteback has the kernel start writing f's dirty pages to the device every 2 ms, until
// the returned stop is called, so that the device writes a commit's first pages while bbolt
// still copies its later ones into the page cache, and the commit's fdatasync finds less
// left to write. It only starts write-out (sync_file_range(SYNC_FILE_RANGE_WRITE), which
// skips pages already being written and waits for nothing); durability still comes from
// bbolt's fdatasync. f may be a read-only descriptor.
func startWriteback(f *os.File) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE); err != nil {
					return // not supported here: the fdatasync alone writes everything
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// heapPrefaulted is the most memory prefaultHeap has faulted in for this process.
var heapPrefaulted atomic.Int64

// prefaultHeap makes sure the Go heap holds n bytes of memory that the kernel has already
// mapped, backed by transparent huge pages where the system allows them, so that bbolt's page
// buffers at commit (one fresh allocation per chunk, n bytes in all) reuse it instead of faulting
// in 4 KiB pages one at a time. It allocates n bytes, asks for huge pages (madvise
// MADV_HUGEPAGE), touches every page and drops the buffer; the caller's garbage collection then
// returns it to the heap's free pages. Only growth beyond what earlier calls faulted in is done.
func prefaultHeap(n int64) {
	for {
		have := heapPrefaulted.Load()
		if n <= have {
			return
		}
		if heapPrefaulted.CompareAndSwap(have, n) {
			break
		}
	}
	buf := make([]byte, n)
	const huge = 2 << 20
	base := int64(uintptr(unsafe.Pointer(&buf[0])))
	start := (base+huge-1)&^(huge-1) - base
	end := (base+n)&^(huge-1) - base
	if end > start {
		_ = unix.Madvise(buf[start:end], unix.MADV_HUGEPAGE)
	}
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	runtime.KeepAlive(buf)
}
