package dataset

import (
	"fmt"
	"slices"
	"testing"

	"ddpm/internal/rng"
)

var testBatches = []int{1, 3, 7, 8, 16, 33, 64, 100}

// Slices of one step are contiguous in rank order, disjoint, cover [s*G, (s+1)*G), and differ in
// size by at most one, for every world size 1..8.
func TestRankSliceCoversTheGlobalBatch(t *testing.T) {
	for world := 1; world <= 8; world++ {
		for _, g := range testBatches {
			for _, step := range []int64{0, 1, 17, 1 << 30} {
				next := uint64(step) * uint64(g)
				minSize, maxSize := g, 0
				for r := 0; r < world; r++ {
					lo, hi := RankSlice(step, g, world, r)
					if lo != next || hi < lo {
						t.Fatalf("world %d G %d step %d rank %d: [%d,%d), want start %d", world, g, step, r, lo, hi, next)
					}
					next = hi
					minSize, maxSize = min(minSize, int(hi-lo)), max(maxSize, int(hi-lo))
				}
				if next != uint64(step+1)*uint64(g) {
					t.Fatalf("world %d G %d step %d: slices end at %d, want %d", world, g, step, next, uint64(step+1)*uint64(g))
				}
				if maxSize-minSize > 1 {
					t.Fatalf("world %d G %d: sizes %d..%d differ by more than one", world, g, minSize, maxSize)
				}
			}
		}
	}
}

func TestRankSliceKnownValues(t *testing.T) {
	// G = 10 over 4 ranks: 3, 3, 2, 2.
	want := [][2]uint64{{20, 23}, {23, 26}, {26, 28}, {28, 30}}
	for r, w := range want {
		if lo, hi := RankSlice(2, 10, 4, r); lo != w[0] || hi != w[1] {
			t.Errorf("RankSlice(2, 10, 4, %d) = [%d, %d), want %v", r, lo, hi, w)
		}
	}
}

func TestRankSlicePanicsOnBadArguments(t *testing.T) {
	for _, c := range [][4]int{{-1, 8, 2, 0}, {0, 0, 2, 0}, {0, 8, 0, 0}, {0, 8, 2, 2}, {0, 8, 2, -1}} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("RankSlice%v did not panic", c)
				}
			}()
			RankSlice(int64(c[0]), c[1], c[2], c[3])
		}()
	}
}

// sample is everything a trainer derives from one global position.
type sample struct {
	index int
	flip  bool
	t     int
	eps0  float64
}

func drawSample(s Sampler, seed, p uint64) sample {
	ts := rng.New(seed, rng.Stream(p, rng.PurposeTimestep))
	ns := rng.New(seed, rng.Stream(p, rng.PurposeNoise))
	return sample{index: s.Index(p), flip: Flip(seed, p), t: ts.Intn(1000), eps0: ns.NormFloat64()}
}

// The global batch, and each sample's randomness, are the same whether 1 or N trainers read it:
// every rank uses its own Sampler (own cache) and only its own slice.
func TestSameGlobalBatchForAnyWorldSize(t *testing.T) {
	const seed, n = 42, 50
	for _, g := range testBatches {
		for world := 2; world <= 8; world++ {
			ranks := make([]Sampler, world)
			for r := range ranks {
				ranks[r] = NewSampler(seed, n)
			}
			single := NewSampler(seed, n)
			for step := int64(0); step < 12; step++ {
				var got []sample
				for r := 0; r < world; r++ {
					lo, hi := RankSlice(step, g, world, r)
					for p := lo; p < hi; p++ {
						got = append(got, drawSample(ranks[r], seed, p))
					}
				}
				lo, hi := RankSlice(step, g, 1, 0)
				var want []sample
				for p := lo; p < hi; p++ {
					want = append(want, drawSample(single, seed, p))
				}
				if !slices.Equal(got, want) {
					t.Fatalf("G %d world %d step %d: batch differs from world 1\n got %v\nwant %v", g, world, step, got, want)
				}
			}
		}
	}
}

// Each epoch visits every record once; consecutive epochs differ; different seeds differ.
func TestEpochsArePermutationsInNewOrders(t *testing.T) {
	for _, n := range []int{2, 10, 1000} {
		s := NewSampler(7, n)
		var prev []int
		for e := uint64(0); e < 5; e++ {
			order := make([]int, n)
			for i := range order {
				order[i] = s.Index(e*uint64(n) + uint64(i))
			}
			sorted := slices.Sorted(slices.Values(order))
			for i, v := range sorted {
				if v != i {
					t.Fatalf("n %d epoch %d is not a permutation: %v", n, e, order)
				}
			}
			if n >= 10 && prev != nil && slices.Equal(order, prev) {
				t.Fatalf("n %d: epochs %d and %d have the same order", n, e-1, e)
			}
			prev = order
		}
		if n >= 10 && slices.Equal(NewSampler(7, n).Permutation(0), NewSampler(8, n).Permutation(0)) {
			t.Fatalf("n %d: seeds 7 and 8 give the same order", n)
		}
	}
	if got := NewSampler(3, 1).Index(12345); got != 0 {
		t.Fatalf("n = 1: Index = %d", got)
	}
}

// Resuming from any cursor, including one on an epoch boundary, reproduces the uninterrupted
// stream: a fresh Sampler (empty cache) at position c gives what the long-lived one gave.
func TestResumeFromAnyCursor(t *testing.T) {
	const seed, n = 99, 13
	long := NewSampler(seed, n)
	stream := make([]int, 6*n)
	for p := range stream {
		stream[p] = long.Index(uint64(p))
	}
	for c := 0; c < len(stream); c++ {
		resumed := NewSampler(seed, n)
		for p := c; p < min(len(stream), c+2*n); p++ {
			if got := resumed.Index(uint64(p)); got != stream[p] {
				t.Fatalf("resume at %d (epoch boundary: %v): position %d = %d, want %d", c, c%n == 0, p, got, stream[p])
			}
		}
	}
	// Out-of-order access (cache thrashing across epochs) changes nothing.
	s := NewSampler(seed, n)
	for _, p := range []int{70, 3, 40, 3, 77, 0, 13, 12, 26} {
		if got := s.Index(uint64(p)); got != stream[p] {
			t.Fatalf("random access %d = %d, want %d", p, got, stream[p])
		}
	}
	// Copies share the cache and agree.
	cp := s
	if cp.Index(5) != stream[5] || s.Index(60) != stream[60] {
		t.Fatal("copied sampler disagrees")
	}
}

func TestFlipIsAPureFairCoin(t *testing.T) {
	heads := 0
	const n = 20000
	for p := uint64(0); p < n; p++ {
		f := Flip(5, p)
		if f != Flip(5, p) {
			t.Fatal("Flip is not deterministic")
		}
		if f {
			heads++
		}
	}
	// Binomial(20000, 0.5): sd 70.7; 5 sd bounds.
	if heads < n/2-354 || heads > n/2+354 {
		t.Fatalf("Flip heads = %d of %d", heads, n)
	}
	diff := 0
	for p := uint64(0); p < 1000; p++ {
		if Flip(5, p) != Flip(6, p) {
			diff++
		}
	}
	if diff < 400 || diff > 600 {
		t.Fatalf("seeds 5 and 6 differ on %d of 1000 flips", diff)
	}
}

func TestFlipWReversesWidth(t *testing.T) {
	// c=2, h=2, w=3
	img := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	FlipW(img, 2, 2, 3)
	want := []float32{3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10}
	if !slices.Equal(img, want) {
		t.Fatalf("FlipW = %v, want %v", img, want)
	}
	FlipW(img, 2, 2, 3)
	FlipW(img[:4], 1, 2, 2)
	if fmt.Sprint(img[:4]) != "[2 1 4 3]" {
		t.Fatalf("FlipW even width = %v", img[:4])
	}
	defer func() {
		if recover() == nil {
			t.Fatal("FlipW with a wrong length did not panic")
		}
	}()
	FlipW(img, 1, 2, 3)
}
