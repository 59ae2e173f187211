package allreduce

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
)

// TestPadAlignsPayload: for headers of every length the varints give, the payload of an
// encoded DATA frame starts at a multiple of 4 bytes from the start of the gRPC message
// (its 5-byte prefix included), and the frame still decodes as an ordinary api.Frame.
func TestPadAlignsPayload(t *testing.T) {
	for _, gen := range []uint64{1, 200, 1 << 20, 1 << 40} {
		for _, off := range []uint64{0, 5, 300, 1 << 17, 1 << 30} {
			for _, n := range []int{1, 31, 64 << 10} {
				payload := make([]float32, n)
				payload[n-1] = 1.5
				h := header{kind: api.FrameKind_FRAME_KIND_DATA, generation: gen, op: 7, length: uint64(n) + off,
					step: 1, segment: 2, chunk: 3, offset: off}
				f := newOutFrame(&h, payload, nil)
				wire := f.data.Materialize()
				f.data.Free()
				start := len(wire) - 4*n
				if (grpcPrefixBytes+start)%4 != 0 {
					t.Errorf("gen=%d offset=%d n=%d: payload at byte %d of the message (+5 prefix)", gen, off, n, start)
				}
				var m api.Frame
				if err := proto.Unmarshal(wire, &m); err != nil {
					t.Fatalf("gen=%d offset=%d n=%d: %v", gen, off, n, err)
				}
				if m.Generation != gen || m.Offset != off || len(m.Payload) != 4*n ||
					math.Float32frombits(binary.LittleEndian.Uint32(m.Payload[4*n-4:])) != 1.5 {
					t.Errorf("gen=%d offset=%d n=%d: decoded %v", gen, off, n, &m)
				}
			}
		}
	}
}

// TestAddFromSplits: the payload added from receive buffers cut anywhere (values split between
// buffers, runs misaligned in memory, empty buffers) gives exactly dst[i] + x[i] everywhere.
func TestAddFromSplits(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 40000
	x := make([]float32, n)
	base := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		base[i] = float32(rng.NormFloat64())
	}
	wire := make([]byte, 4*n)
	for i, v := range x {
		binary.LittleEndian.PutUint32(wire[4*i:], math.Float32bits(v))
	}
	scratch := make([]float32, 100) // small, so the staged path loops
	var parts [][]byte
	for trial := range 50 {
		var bs mem.BufferSlice
		for rest := wire; len(rest) > 0; {
			k := min(len(rest), rng.IntN(3000))
			if trial%2 == 0 {
				k = min(len(rest), 16384-5*(len(bs)%2)) // frame-like cuts, some misaligned
			}
			// copy into a buffer starting at a random offset, so alignment varies
			shift := rng.IntN(4)
			b := make([]byte, shift+k)[shift:]
			copy(b, rest[:k])
			bs = append(bs, mem.SliceBuffer(b))
			rest = rest[k:]
		}
		dst := append([]float32(nil), base...)
		r := bs.Reader()
		var err error
		if parts, err = addFrom(r, dst, scratch, parts); err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if r.Remaining() != 0 {
			t.Fatalf("trial %d: %d bytes left unread", trial, r.Remaining())
		}
		for i := range dst {
			if want := base[i] + x[i]; math.Float32bits(dst[i]) != math.Float32bits(want) {
				t.Fatalf("trial %d: dst[%d] = %v, want %v", trial, i, dst[i], want)
			}
		}
	}
	short := mem.BufferSlice{mem.SliceBuffer(wire[:7])}
	if _, err := addFrom(short.Reader(), make([]float32, 2), scratch, nil); err == nil {
		t.Fatal("7 bytes for 2 values: no error")
	}
}

// TestBufPoolReusesWithoutClearing: a buffer put back is handed out again for any request of
// its size class, as it was left (gRPC's own pool would clear it), with the requested length;
// requests above the classes are served but not kept; a class keeps at most
// maxIdlePerClass bytes idle.
func TestBufPoolReusesWithoutClearing(t *testing.T) {
	p := &bufPool{}
	b := p.Get(16 << 10)
	if len(*b) != 16<<10 || cap(*b) != 16<<10 {
		t.Fatalf("Get(16 KiB): len %d cap %d, want 16384 and 16384", len(*b), cap(*b))
	}
	(*b)[0], (*b)[len(*b)-1] = 7, 9
	p.Put(b)
	c := p.Get(9000) // same class: 8 KiB < 9000 <= 16 KiB
	if c != b || len(*c) != 9000 {
		t.Fatalf("Get(9000) after Put: got %p len %d, want the buffer put back (%p) with len 9000", c, len(*c), b)
	}
	if (*c)[0] != 7 || (*c)[:16<<10][16<<10-1] != 9 {
		t.Fatal("pooled buffer was cleared")
	}
	if d := p.Get(16 << 10); d == b {
		t.Fatal("a buffer in use was handed out twice")
	}
	// A capacity that is not a power of two serves the class below it.
	odd := make([]byte, 3000)
	p.Put(&odd)
	if e := p.Get(2048); &(*e)[0] != &odd[0] {
		t.Fatal("a 3000-byte buffer put back did not serve a 2 KiB request")
	}
	// Below the smallest class: served from it.
	if x := p.Get(1); len(*x) != 1 || cap(*x) != 1<<minPoolClass {
		t.Fatalf("Get(1): len %d cap %d, want 1 and %d", len(*x), cap(*x), 1<<minPoolClass)
	}
	// Above the largest: served, never kept.
	n := 1<<maxPoolClass + 1
	x := p.Get(n)
	if len(*x) != n {
		t.Fatalf("Get(%d): len %d", n, len(*x))
	}
	p.Put(x)
	if y := p.Get(n); y == x {
		t.Fatalf("Get(%d) reused a buffer above the pooled classes", n)
	}
	// The idle bound: 1 MiB buffers, at most maxIdlePerClass of them kept.
	const c20 = 20
	keep := maxIdlePerClass >> c20
	bufs := make([]*[]byte, keep+3)
	for i := range bufs {
		bufs[i] = p.Get(1 << c20)
	}
	for _, x := range bufs {
		p.Put(x)
	}
	if n := len(p.classes[c20].free); n != keep {
		t.Fatalf("class 1 MiB keeps %d idle buffers, want %d", n, keep)
	}
}
