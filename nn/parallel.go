package nn

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// minParallelWork is the number of element operations below which a loop runs on the calling
// goroutine: handing a chunk to a worker costs about a microsecond.
const minParallelWork = 1 << 15

// A job is one chunk [lo, hi) of a parallelFor, run by a pool worker.
type job struct {
	fn     func(lo, hi int)
	fnc    func(chunk, lo, hi int) // instead of fn, for parallelForChunks
	chunk  int
	lo, hi int
	wg     *sync.WaitGroup
}

// The worker pool: goroutines started on demand (up to GOMAXPROCS-1 of them) that live for the
// process, so a parallel loop costs channel sends, not goroutine starts, and allocates nothing.
var (
	poolMu  sync.Mutex
	poolN   atomic.Int32
	jobs    = make(chan job, 256)
	waiters = sync.Pool{New: func() any { return new(sync.WaitGroup) }}
)

func ensureWorkers(n int) {
	if int(poolN.Load()) >= n {
		return
	}
	poolMu.Lock()
	defer poolMu.Unlock()
	for int(poolN.Load()) < n {
		go func() {
			for j := range jobs {
				if j.fnc != nil {
					j.fnc(j.chunk, j.lo, j.hi)
				} else {
					j.fn(j.lo, j.hi)
				}
				j.wg.Done()
			}
		}()
		poolN.Add(1)
	}
}

// parallelFor splits [0, n) into contiguous chunks, one per available CPU, and runs fn on each
// chunk concurrently (the first on the calling goroutine, the others on pool workers); work
// estimates the total element operations, and small loops run inline. fn must write only to
// data owned by its own index range and must not itself call parallelFor. Pass a func value
// that already exists (a method value bound once and kept in the layer): a fresh closure per
// call would be a heap allocation.
func parallelFor(n, work int, fn func(lo, hi int)) {
	p := runtime.GOMAXPROCS(0)
	if p > n {
		p = n
	}
	if p <= 1 || work < minParallelWork {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	ensureWorkers(p - 1)
	wg := waiters.Get().(*sync.WaitGroup)
	wg.Add(p - 1)
	for i := 1; i < p; i++ {
		jobs <- job{fn: fn, lo: i * n / p, hi: (i + 1) * n / p, wg: wg}
	}
	fn(0, n/p)
	wg.Wait()
	waiters.Put(wg)
}

// parallelForChunks is parallelFor for a body that also takes the index of its chunk, in
// [0, maxChunks()): chunks run concurrently, so the index can select scratch buffers of their
// own.
func parallelForChunks(n, work int, fn func(chunk, lo, hi int)) {
	p := min(runtime.GOMAXPROCS(0), n)
	if p <= 1 || work < minParallelWork {
		if n > 0 {
			fn(0, 0, n)
		}
		return
	}
	ensureWorkers(p - 1)
	wg := waiters.Get().(*sync.WaitGroup)
	wg.Add(p - 1)
	for i := 1; i < p; i++ {
		jobs <- job{fnc: fn, chunk: i, lo: i * n / p, hi: (i + 1) * n / p, wg: wg}
	}
	fn(0, 0, n/p)
	wg.Wait()
	waiters.Put(wg)
}

// maxChunks bounds the chunk indices of parallelForChunks.
func maxChunks() int { return max(1, runtime.GOMAXPROCS(0)) }

// grow returns buf resliced to n elements, reallocating only when its capacity is too small.
// The contents are unspecified.
func grow[T Float](buf []T, n int) []T {
	if cap(buf) < n {
		return make([]T, n)
	}
	return buf[:n]
}

func clear0[T Float](s []T) {
	for i := range s {
		s[i] = 0
	}
}
