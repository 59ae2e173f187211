package rng

import (
	"math"
	"testing"
)

// The known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 R=10).
func TestPhiloxKnownAnswers(t *testing.T) {
	cases := []struct {
		ctr  [4]uint32
		key  [2]uint32
		want [4]uint32
	}{
		{[4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{[4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff}, [4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{[4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0}, [4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	}
	for _, c := range cases {
		lo := uint64(c.ctr[0]) | uint64(c.ctr[1])<<32
		hi := uint64(c.ctr[2]) | uint64(c.ctr[3])<<32
		if got := Block(c.key, lo, hi); got != c.want {
			t.Errorf("Block(%x, %x) = %x, want %x", c.key, c.ctr, got, c.want)
		}
	}
}

func TestSameKeySameStream(t *testing.T) {
	a, b := New(7, Stream(123, PurposeNoise)), New(7, Stream(123, PurposeNoise))
	for i := 0; i < 1000; i++ {
		if x, y := a.Uint32(), b.Uint32(); x != y {
			t.Fatalf("draw %d: %d != %d", i, x, y)
		}
	}
	c := New(7, Stream(124, PurposeNoise))
	same := 0
	a.Reset(7, Stream(123, PurposeNoise))
	for i := 0; i < 1000; i++ {
		if a.Uint32() == c.Uint32() {
			same++
		}
	}
	if same > 2 {
		t.Fatalf("streams of adjacent positions agree on %d of 1000 words", same)
	}
}

func TestNormalMoments(t *testing.T) {
	s := New(1, 2)
	const n = 200000
	var sum, sq float64
	for i := 0; i < n; i++ {
		v := s.NormFloat64()
		sum += v
		sq += v * v
	}
	mean, variance := sum/n, sq/n-(sum/n)*(sum/n)
	// 5 standard errors: mean se = 1/sqrt(n) = 0.0022; variance se = sqrt(2/n) = 0.0032.
	if math.Abs(mean) > 0.011 || math.Abs(variance-1) > 0.016 {
		t.Fatalf("mean %.4f variance %.4f, want 0 and 1", mean, variance)
	}
}

func TestIntnUniform(t *testing.T) {
	s := New(3, 4)
	var counts [10]int
	for i := 0; i < 100000; i++ {
		counts[s.Intn(10)]++
	}
	for d, c := range counts {
		if c < 9500 || c > 10500 { // 5 sigma of binomial(1e5, 0.1) is about 475
			t.Errorf("value %d drawn %d times of 100000", d, c)
		}
	}
}
