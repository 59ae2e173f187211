package checkpoint

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// fileCache returns the page-cache state of f (cachestat(2), Linux 6.5 on); the test is
// skipped where the kernel lacks it.
func fileCache(t *testing.T, f *os.File) unix.Cachestat_t {
	t.Helper()
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
		t.Skipf("cachestat: %v (needs Linux 6.5)", err)
	}
	return st
}

// TestStartWriteback writes 16 MiB without a sync, far below the kernel's own writeback
// thresholds (which would leave the pages dirty for dirty_expire_centisecs, 30 s by default),
// and checks that startWriteback, given a read-only descriptor as Save gives it, gets every
// page written out within 5 s, and that stop ends its goroutine.
func TestStartWriteback(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is tmpfs or unknown (%v): nothing is written back", dir, err)
	}
	path := filepath.Join(dir, "dirty.bin")
	w, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	buf := make([]byte, 16<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	if _, err := w.Write(buf); err != nil {
		t.Fatal(err)
	}
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if st := fileCache(t, r); st.Dirty == 0 {
		t.Skipf("the kernel wrote the pages back by itself (cache %d, writeback %d pages)", st.Cache, st.Writeback)
	}
	stop := startWriteback(r)
	deadline := time.Now().Add(5 * time.Second)
	st := fileCache(t, r)
	for (st.Dirty > 0 || st.Writeback > 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		st = fileCache(t, r)
	}
	stop()
	if st.Dirty > 0 || st.Writeback > 0 {
		t.Fatalf("after 5 s %d pages are dirty and %d being written, want 0 and 0", st.Dirty, st.Writeback)
	}
}

// TestPrefaultHeapOnlyGrows: prefaultHeap records the largest size it faulted in and does
// nothing (no allocation) for a size it already covered.
func TestPrefaultHeapOnlyGrows(t *testing.T) {
	n := heapPrefaulted.Load() + 8<<20
	prefaultHeap(n)
	if got := heapPrefaulted.Load(); got != n {
		t.Fatalf("heapPrefaulted = %d after prefaultHeap(%d), want %d", got, n, n)
	}
	for _, m := range []int64{n, n - 1, 0} {
		if a := testing.AllocsPerRun(3, func() { prefaultHeap(m) }); a != 0 {
			t.Errorf("prefaultHeap(%d) after prefaultHeap(%d) allocated %v times, want 0", m, n, a)
		}
	}
}
