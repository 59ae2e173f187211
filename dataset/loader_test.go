package dataset

import (
	"slices"
	"testing"
)

// LoadBatch assembles exactly the samples a single reader would, with flips per position, and
// the concatenation of the ranks' batches is the world-1 batch.
func TestLoadBatchMatchesSerialReads(t *testing.T) {
	ds, err := Open("mnist:test", Options{})
	if err != nil {
		t.Fatal(err)
	}
	const seed, g = 11, 10
	s := NewSampler(seed, ds.Len())
	d := 32 * 32
	whole := make([]float32, g*d)
	labels := make([]int, g)
	if err := LoadBatch(ds, s, seed, true, 30, 40, whole, labels); err != nil {
		t.Fatal(err)
	}
	flips := 0
	one := make([]float32, d)
	for k := 0; k < g; k++ {
		p := uint64(30 + k)
		ds.Image(s.Index(p), one)
		if Flip(seed, p) {
			FlipW(one, 1, 32, 32)
			flips++
		}
		if !slices.Equal(one, whole[k*d:(k+1)*d]) || labels[k] != ds.Label(s.Index(p)) {
			t.Fatalf("sample %d differs from a serial read", k)
		}
	}
	if flips == 0 || flips == g {
		t.Fatalf("%d of %d flipped; the test wants a mix", flips, g)
	}
	var parts []float32
	for r := 0; r < 3; r++ {
		lo, hi := RankSlice(3, g, 3, r)
		part := make([]float32, int(hi-lo)*d)
		if err := LoadBatch(ds, NewSampler(seed, ds.Len()), seed, true, lo, hi, part, nil); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, part...)
	}
	if !slices.Equal(parts, whole) {
		t.Fatal("three ranks' batches do not concatenate to the world-1 batch")
	}
}
