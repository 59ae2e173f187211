package nn

import (
	"runtime"
	"sync"
)

// minParallelWork is the number of element operations below which a loop runs on the calling
// goroutine: starting goroutines costs about a microsecond each.
const minParallelWork = 1 << 15

// parallelFor splits [0, n) into contiguous chunks, one per available CPU, and runs fn on each
// chunk concurrently; work estimates the total element operations, and small loops run inline.
// fn must write only to data owned by its own index range.
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
	var wg sync.WaitGroup
	wg.Add(p - 1)
	for i := 1; i < p; i++ {
		lo, hi := i*n/p, (i+1)*n/p
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn(0, n/p)
	wg.Wait()
}

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
