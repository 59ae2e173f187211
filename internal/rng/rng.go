// Package rng is the project's counter-based random number generator: Philox4x32-10
// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// A Source is a pure function of its key (seed, stream) and a counter, so the numbers drawn for
// one training sample depend only on (seed, sample position, purpose), never on which trainer
// draws them, how many trainers there are, or what was drawn before. This is what makes a run
// independent of world size and bit-identical after a resume (DESIGN.md section 3).
//
// Sources are cheap values; they are not safe for concurrent use.
package rng

import (
	"math"
	"math/bits"
)

// Purposes: the stream ids used for per-sample randomness. A sample's stream is
// Stream(position, purpose) so that the draws for different purposes never overlap.
const (
	PurposeTimestep uint64 = 1 // t ~ U{0..T-1}
	PurposeNoise    uint64 = 2 // eps ~ N(0, I)
	PurposeFlip     uint64 = 3 // horizontal flip
	PurposeDropout  uint64 = 4 // dropout masks; the layer index is added: PurposeDropout<<32 | layer
	PurposeEpoch    uint64 = 5 // the permutation of an epoch
	PurposeSampling uint64 = 6 // noise of the reverse process (Algorithm 2)
	PurposeInit     uint64 = 7 // parameter initialization
)

const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// Source draws from the Philox4x32-10 stream keyed by (Seed, Stream). The counter advances by
// one block (four 32-bit words) at a time; Counter gives the position for checkpointing.
type Source struct {
	key     [2]uint32
	stream  uint64 // high 64 bits of the 128-bit counter
	counter uint64 // low 64 bits: the block index
	buf     [4]uint32
	used    int // words of buf already consumed (4 = empty)
	spare   float64
	hasNorm bool
}

// New returns the Source for (seed, stream) positioned at block 0.
func New(seed, stream uint64) *Source {
	s := &Source{}
	s.Reset(seed, stream)
	return s
}

// Reset re-keys s to (seed, stream) at block 0 without allocating.
func (s *Source) Reset(seed, stream uint64) {
	s.key = [2]uint32{uint32(seed), uint32(seed >> 32)}
	s.stream = stream
	s.counter = 0
	s.used = 4
	s.hasNorm = false
}

// Stream combines a sample position and a purpose into one stream id: position<<8 | purpose
// would overflow for dropout purposes, so the two are mixed by a bijective 64-bit hash.
func Stream(position, purpose uint64) uint64 {
	return mix64(position*0x9E3779B97F4A7C15 ^ mix64(purpose+0x632BE59BD9B4E019))
}

// mix64 is the SplitMix64 finalizer, a bijection on uint64.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// Block computes Philox4x32-10 of the 128-bit counter (ctrLo, ctrHi) under key.
func Block(key [2]uint32, ctrLo, ctrHi uint64) [4]uint32 {
	c := [4]uint32{uint32(ctrLo), uint32(ctrLo >> 32), uint32(ctrHi), uint32(ctrHi >> 32)}
	k0, k1 := key[0], key[1]
	for i := 0; i < 10; i++ {
		hi0, lo0 := bits.Mul32(philoxM0, c[0])
		hi1, lo1 := bits.Mul32(philoxM1, c[2])
		c = [4]uint32{hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0}
		k0 += philoxW0
		k1 += philoxW1
	}
	return c
}

func (s *Source) refill() {
	s.buf = Block(s.key, s.counter, s.stream)
	s.counter++
	s.used = 0
}

// Uint32 returns the next 32 random bits.
func (s *Source) Uint32() uint32 {
	if s.used == 4 {
		s.refill()
	}
	v := s.buf[s.used]
	s.used++
	return v
}

// Uint64 returns the next 64 random bits.
func (s *Source) Uint64() uint64 {
	return uint64(s.Uint32())<<32 | uint64(s.Uint32())
}

// Float64 returns a uniform float64 in [0, 1) with 53 random bits.
func (s *Source) Float64() float64 {
	return float64(s.Uint64()>>11) * (1.0 / (1 << 53))
}

// Float32 returns a uniform float32 in [0, 1) with 24 random bits.
func (s *Source) Float32() float32 {
	return float32(s.Uint32()>>8) * (1.0 / (1 << 24))
}

// Intn returns a uniform integer in [0, n) without modulo bias (Lemire's method).
// It panics if n <= 0.
func (s *Source) Intn(n int) int {
	if n <= 0 {
		panic("rng: Intn: n must be positive")
	}
	bound := uint64(n)
	for {
		hi, lo := bits.Mul64(s.Uint64(), bound)
		if lo >= bound || lo >= (-bound)%bound {
			return int(hi)
		}
	}
}

// NormFloat64 returns a standard normal variate (Box-Muller on two uniforms; the second
// variate of each pair is kept for the next call).
func (s *Source) NormFloat64() float64 {
	if s.hasNorm {
		s.hasNorm = false
		return s.spare
	}
	u1 := 1 - s.Float64() // (0, 1]
	u2 := s.Float64()
	r := math.Sqrt(-2 * math.Log(u1))
	sn, cs := math.Sincos(2 * math.Pi * u2)
	s.spare = r * sn
	s.hasNorm = true
	return r * cs
}

// FillNormal fills dst with standard normal float32 variates.
func (s *Source) FillNormal(dst []float32) {
	for i := range dst {
		dst[i] = float32(s.NormFloat64())
	}
}

// Perm returns a uniformly random permutation of [0, n) (Fisher-Yates).
func (s *Source) Perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := s.Intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}
