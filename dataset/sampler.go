package dataset

import (
	"fmt"
	"sync/atomic"

	"ddpm/internal/rng"
)

// Sampler is the global sample stream of a run (DESIGN.md section 3): position p, counted from 0
// over the whole run, is record Index(p). Positions [e*n, (e+1)*n) form epoch e and visit every
// record once, in a permutation drawn from rng.New(seed, rng.Stream(e, rng.PurposeEpoch)). So the
// stream is a pure function of (seed, n, position): the data cursor of a checkpoint is one
// integer, and any number of trainers reading disjoint positions see the same run.
//
// A Sampler caches the permutation of the epoch it last served; the cache never changes results.
// It is safe for concurrent use; copies share the cache.
type Sampler struct {
	seed  uint64
	n     int
	cache *atomic.Pointer[epochPerm]
}

type epochPerm struct {
	epoch uint64
	perm  []int32
}

// NewSampler returns the stream over n records. It panics if n <= 0 or n >= 2^31.
func NewSampler(seed uint64, n int) Sampler {
	if n <= 0 || n >= 1<<31 {
		panic(fmt.Sprintf("dataset: NewSampler: n = %d, want 1 <= n < 2^31", n))
	}
	return Sampler{seed: seed, n: n, cache: new(atomic.Pointer[epochPerm])}
}

// Len is the number of records per epoch.
func (s Sampler) Len() int { return s.n }

// Epoch is the epoch that position belongs to.
func (s Sampler) Epoch(position uint64) uint64 { return position / uint64(s.n) }

// Index is the record at global position.
func (s Sampler) Index(position uint64) int {
	if s.cache == nil {
		panic("dataset: Sampler used without NewSampler")
	}
	e := position / uint64(s.n)
	p := s.cache.Load()
	if p == nil || p.epoch != e {
		p = &epochPerm{epoch: e, perm: s.Permutation(e)}
		s.cache.Store(p)
	}
	return int(p.perm[position%uint64(s.n)])
}

// Permutation returns epoch e's order of the n records: a Fisher-Yates shuffle driven by
// rng.New(seed, rng.Stream(e, rng.PurposeEpoch)), as rng.Source.Perm draws it.
func (s Sampler) Permutation(e uint64) []int32 {
	src := rng.New(s.seed, rng.Stream(e, rng.PurposeEpoch))
	p := make([]int32, s.n)
	for i := range p {
		p[i] = int32(i)
	}
	for i := s.n - 1; i > 0; i-- {
		j := src.Intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// RankSlice returns rank's contiguous share [lo, hi) of step's global positions
// [step*globalBatch, (step+1)*globalBatch). The first globalBatch%world ranks take one extra
// position, so sizes differ by at most one and globalBatch need not divide by world; a rank may
// get an empty slice when globalBatch < world. It panics if step < 0, globalBatch < 1, world < 1
// or rank is not in [0, world).
func RankSlice(step int64, globalBatch, world, rank int) (lo, hi uint64) {
	if step < 0 || globalBatch < 1 || world < 1 || rank < 0 || rank >= world {
		panic(fmt.Sprintf("dataset: RankSlice(step=%d, globalBatch=%d, world=%d, rank=%d): invalid arguments",
			step, globalBatch, world, rank))
	}
	q, r := globalBatch/world, globalBatch%world
	base := uint64(step) * uint64(globalBatch)
	lo = base + uint64(rank*q+min(rank, r))
	hi = lo + uint64(q)
	if rank < r {
		hi++
	}
	return lo, hi
}

// Flip is the horizontal-flip decision for the sample at global position: the low bit of the
// first draw of rng.New(seed, rng.Stream(position, rng.PurposeFlip)), so a fair coin that depends
// on nothing but (seed, position).
func Flip(seed, position uint64) bool {
	var s rng.Source
	s.Reset(seed, rng.Stream(position, rng.PurposeFlip))
	return s.Uint32()&1 == 1
}

// FlipW reverses the W axis of the CHW image img in place (a horizontal flip). It panics if
// len(img) != c*h*w.
func FlipW(img []float32, c, h, w int) {
	if c < 0 || h < 0 || w < 0 || len(img) != c*h*w {
		panic(fmt.Sprintf("dataset: FlipW: len(img) = %d, want %d*%d*%d", len(img), c, h, w))
	}
	for row := 0; row < c*h; row++ {
		r := img[row*w : (row+1)*w]
		for i, j := 0, w-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
	}
}
