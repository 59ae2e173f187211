package allreduce

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
	"unsafe"

	"gonum.org/v1/gonum/blas/gonum"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"ddpm/api"
)

// codecName is the gRPC content-subtype of the ring's streams. The codec writes and reads the
// ordinary protobuf encoding of api.Frame, but without the intermediate copies of the generic
// codec: a DATA frame is encoded straight from the float32 buffer into one pooled buffer, and
// its payload is added (reduce-scatter) or copied (all-gather) from gRPC's receive buffers
// straight into the destination. Messages of other types go through the proto codec.
const codecName = "ddpm-allreduce-v1"

// Field numbers of api.Frame (see api/allreduce.proto).
const (
	fKind       = 1
	fGeneration = 2
	fFromRank   = 3
	fWorld      = 4
	fOp         = 5
	fLength     = 6
	fStep       = 7
	fSegment    = 8
	fChunk      = 9
	fOffset     = 10
	fPad        = 14
	fPayload    = 15
)

// maxHeaderBytes bounds the encoded size of every Frame field but the payload.
const maxHeaderBytes = 11*(1+binary.MaxVarintLen64) + 1 + binary.MaxVarintLen64 + 5

// header holds a Frame's fields except the payload.
type header struct {
	kind          api.FrameKind
	generation    uint64
	fromRank      uint32
	world         uint32
	op, length    uint64
	step, segment uint32
	chunk         uint32
	offset        uint64
}

func (h *header) String() string {
	return fmt.Sprintf("%v gen=%d from=%d world=%d op=%d length=%d step=%d segment=%d chunk=%d offset=%d",
		h.kind, h.generation, h.fromRank, h.world, h.op, h.length, h.step, h.segment, h.chunk, h.offset)
}

// outFrame is a Frame already encoded into pooled memory; gRPC frees it once written.
type outFrame struct{ data mem.BufferSlice }

// framePool recycles the ring's buffers: encoded frames, and (set as the gRPC server's and
// client's buffer pool by ServerOptions and NewRing) the buffers gRPC reads DATA frames into.
// gRPC's default pool clears every buffer it hands out and keeps its buffers in sync.Pools
// that each garbage collection empties; at 4 ranks on 2 cores that clearing alone was 4% of
// the ring's CPU. This one hands buffers out as they were left: every user overwrites the
// bytes it reads back (gRPC reads exactly a frame's length into its buffer).
var framePool = &bufPool{}

// Size classes of bufPool: powers of two from 256 B to 8 MiB.
const (
	minPoolClass = 8
	maxPoolClass = 23
	// maxIdlePerClass bounds the idle bytes a class keeps (a stream flow-control window).
	maxIdlePerClass = 16 << 20
)

// bufPool is a mem.BufferPool of byte slices kept by power-of-two capacity class, handed out
// without clearing. Requests outside the classes are allocated and dropped.
type bufPool struct {
	classes [maxPoolClass + 1]struct {
		mu   sync.Mutex
		free []*[]byte
	}
}

// classOf returns the smallest class whose buffers hold n bytes (n <= 1<<c).
func classOf(n int) int {
	c := minPoolClass
	for c <= maxPoolClass && 1<<c < n {
		c++
	}
	return c
}

func (p *bufPool) Get(n int) *[]byte {
	c := classOf(n)
	if c > maxPoolClass {
		b := make([]byte, n)
		return &b
	}
	cl := &p.classes[c]
	cl.mu.Lock()
	if k := len(cl.free); k > 0 {
		b := cl.free[k-1]
		cl.free = cl.free[:k-1]
		cl.mu.Unlock()
		*b = (*b)[:n]
		return b
	}
	cl.mu.Unlock()
	b := make([]byte, n, 1<<c)
	return &b
}

// Put keeps b in the largest class its capacity fills, unless that class holds enough.
func (p *bufPool) Put(b *[]byte) {
	k := cap(*b)
	if k < 1<<minPoolClass {
		return
	}
	c := maxPoolClass
	for 1<<c > k {
		c--
	}
	cl := &p.classes[c]
	cl.mu.Lock()
	if len(cl.free) < maxIdlePerClass>>c {
		cl.free = append(cl.free, b)
	}
	cl.mu.Unlock()
}

// payloadRefs counts the payload buffers of one operation that gRPC still holds: a frame's
// payload is the caller's memory itself, not a copy (on little-endian hosts, for payloads
// above gRPC's pooling threshold), and gRPC frees it, through Put, once it has been written to
// the connection or dropped with its stream.
type payloadRefs struct {
	mu   sync.Mutex
	n    int
	zero chan struct{} // closed when n drops to 0, if someone waits
}

func (p *payloadRefs) add() {
	p.mu.Lock()
	p.n++
	p.mu.Unlock()
}

// Get is never used: payloadRefs only receives frees.
func (p *payloadRefs) Get(int) *[]byte { panic("allreduce: payloadRefs.Get") }

func (p *payloadRefs) Put(*[]byte) {
	p.mu.Lock()
	p.n--
	if p.n == 0 && p.zero != nil {
		close(p.zero)
		p.zero = nil
	}
	p.mu.Unlock()
}

// wait reports whether gRPC released every payload within d.
func (p *payloadRefs) wait(d time.Duration) bool {
	p.mu.Lock()
	if p.n == 0 {
		p.mu.Unlock()
		return true
	}
	if p.zero == nil {
		p.zero = make(chan struct{})
	}
	ch := p.zero
	p.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// newOutFrame encodes h followed by payload (little-endian float32). The header goes into a
// pooled buffer; a payload large enough to be worth it is referenced in place and counted in
// refs (the caller must keep it unchanged until refs drains), a small one is copied.
func newOutFrame(h *header, payload []float32, refs *payloadRefs) *outFrame {
	zeroCopy := refs != nil && littleEndian && !mem.IsBelowBufferPoolingThreshold(4*len(payload))
	pool := framePool
	size := maxHeaderBytes
	if !zeroCopy {
		size += 4 * len(payload)
	}
	bp := pool.Get(size)
	b := (*bp)[:0]
	put := func(num protowire.Number, v uint64) {
		if v != 0 { // proto3: zero scalars are not written
			b = protowire.AppendTag(b, num, protowire.VarintType)
			b = protowire.AppendVarint(b, v)
		}
	}
	put(fKind, uint64(h.kind))
	put(fGeneration, h.generation)
	put(fFromRank, uint64(h.fromRank))
	put(fWorld, uint64(h.world))
	put(fOp, h.op)
	put(fLength, h.length)
	put(fStep, uint64(h.step))
	put(fSegment, uint64(h.segment))
	put(fChunk, uint64(h.chunk))
	put(fOffset, h.offset)
	if len(payload) > 0 {
		b = appendPad(b, 4*len(payload))
		b = protowire.AppendTag(b, fPayload, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(4*len(payload)))
		if zeroCopy {
			*bp = b
			view := bytesOf(payload)
			refs.add()
			return &outFrame{data: mem.BufferSlice{mem.NewBuffer(bp, pool), mem.NewBuffer(&view, refs)}}
		}
		n := len(b)
		b = b[:n+4*len(payload)]
		putFloats(b[n:], payload)
	}
	*bp = b
	return &outFrame{data: mem.BufferSlice{mem.NewBuffer(bp, pool)}}
}

// grpcPrefixBytes is the length of gRPC's message prefix (compression flag and length),
// which precedes the encoded Frame in the HTTP/2 DATA frames.
const grpcPrefixBytes = 5

// appendPad appends a pad field to the header b of a frame whose payload has n bytes, sized so
// that the payload starts at a multiple of 4 bytes from the start of the gRPC message, prefix
// included. gRPC starts each message in a new HTTP/2 DATA frame and cuts DATA frames at
// multiples of 16 KiB while the flow-control windows are open, and its receive buffers are
// aligned, so the payload's float32 values arrive 4-byte aligned in memory and the receiver
// adds them without staging them.
func appendPad(b []byte, n int) []byte {
	end := grpcPrefixBytes + len(b) + protowire.SizeTag(fPayload) + protowire.SizeBytes(n) - n
	switch (4 - end%4) % 4 {
	case 1: // the smallest pad field is 2 bytes: use 5
		b = append(b, byte(fPad<<3|protowire.BytesType), 3, 0, 0, 0)
	case 2:
		b = append(b, byte(fPad<<3|protowire.BytesType), 0)
	case 3:
		b = append(b, byte(fPad<<3|protowire.BytesType), 1, 0)
	}
	return b
}

// frameSink receives the payload of an inbound frame. begin validates the header and returns
// where the payload goes (nil dst: no payload allowed) and whether to add or copy; end is
// called after the payload has been applied, or not at all if begin failed. The sink is
// locked from a successful begin to end; a reader that must wait for payload bytes unlocks
// it meanwhile, and lock reports whether the destination may still be written (if not, the
// sink is left unlocked and end is not called).
type frameSink interface {
	begin(h *header, payloadBytes int) (dst []float32, add bool, err error)
	unlock()
	lock() bool
	end()
}

// inFrame is the receive-side view of a Frame: the header, with the payload delivered to sink.
type inFrame struct {
	h       header
	sink    frameSink
	err     error     // validation failure reported by sink.begin (the frame was discarded)
	scratch []float32 // reduce-scatter staging, reused
	parts   [][]byte  // views of the payload's receive buffers, reused
}

var errMalformed = errors.New("malformed frame")

type codec struct{}

func init() { encoding.RegisterCodecV2(codec{}) }

func (codec) Name() string { return codecName }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*outFrame); ok {
		d := f.data
		f.data = nil
		return d, nil
	}
	return encoding.GetCodecV2(protocodec.Name).Marshal(v)
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*inFrame)
	if !ok {
		return encoding.GetCodecV2(protocodec.Name).Unmarshal(data, v)
	}
	r := data.Reader()
	defer r.Close()
	f.h, f.err = header{}, nil
	payload, err := decodeHeader(r, &f.h)
	if err != nil {
		return err
	}
	if f.sink == nil {
		if payload > 0 {
			f.err = fmt.Errorf("%w: unexpected payload in %v", ErrMismatch, &f.h)
		}
		return nil
	}
	dst, add, err := f.sink.begin(&f.h, payload)
	if err != nil {
		f.err = err
		return nil
	}
	defer f.sink.end()
	if add {
		if f.scratch == nil {
			f.scratch = make([]float32, scratchElems)
		}
		f.parts, err = addFrom(r, dst, f.scratch, f.parts)
		return err
	}
	return copyFrom(r, dst)
}

// fieldReader reads an encoded Frame: gRPC's message reader, or a direct stream's.
type fieldReader interface {
	io.ByteReader
	Remaining() int
	Discard(n int) (int, error)
}

// decodeHeader decodes the fields of a Frame up to its payload into h and returns the
// payload's length in bytes (0 if none); r is left at the payload's first byte. The payload
// must be the last field. A malformed message wraps errMalformed; other errors are r's.
func decodeHeader(r fieldReader, h *header) (int, error) {
	payload := -1
	for r.Remaining() > 0 {
		tag, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, readErr(err)
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		if typ == protowire.BytesType {
			l, err := binary.ReadUvarint(r)
			if err != nil {
				return 0, readErr(err)
			}
			if l > uint64(r.Remaining()) {
				return 0, fmt.Errorf("%w: bad length of field %d", errMalformed, num)
			}
			if num != fPayload {
				if _, err := r.Discard(int(l)); err != nil {
					return 0, readErr(err)
				}
				continue
			}
			if int(l) != r.Remaining() {
				return 0, fmt.Errorf("%w: payload is not the last field", errMalformed)
			}
			payload = int(l)
			break
		}
		if typ != protowire.VarintType {
			return 0, fmt.Errorf("%w: field %d has wire type %d", errMalformed, num, typ)
		}
		x, err := binary.ReadUvarint(r)
		if err != nil {
			return 0, readErr(err)
		}
		switch num {
		case fKind:
			h.kind = api.FrameKind(x)
		case fGeneration:
			h.generation = x
		case fFromRank:
			h.fromRank = uint32(x)
		case fWorld:
			h.world = uint32(x)
		case fOp:
			h.op = x
		case fLength:
			h.length = x
		case fStep:
			h.step = uint32(x)
		case fSegment:
			h.segment = uint32(x)
		case fChunk:
			h.chunk = uint32(x)
		case fOffset:
			h.offset = x
		}
	}
	return max(payload, 0), nil
}

// readErr wraps a failure to read a Frame's fields: a failure of the connection under the
// message (a direct stream's connError) is returned as it is; anything else is the message's
// content (it ended early, or a varint overflows 64 bits) and is malformed.
func readErr(err error) error {
	var ce *connError
	if errors.As(err, &ce) || errors.Is(err, errMalformed) {
		return err
	}
	return fmt.Errorf("%w: %v", errMalformed, err)
}

// scratchElems sizes the staging buffer of the reduce-scatter add (64 KiB, cache resident).
const scratchElems = 16 << 10

var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

func bytesOf(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

// putFloats writes src into dst (len 4*len(src)) as little-endian float32.
func putFloats(dst []byte, src []float32) {
	if littleEndian {
		copy(dst, bytesOf(src))
		return
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func fixEndian(x []float32) {
	if littleEndian {
		return
	}
	b := bytesOf(x)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// copyFrom reads len(dst) little-endian float32 values from r into dst.
func copyFrom(r io.Reader, dst []float32) error {
	if _, err := io.ReadFull(r, bytesOf(dst)); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	fixEndian(dst)
	return nil
}

var blas = gonum.Implementation{}

// addFrom reads len(dst) little-endian float32 values from r and adds them into dst, element by
// element (dst[i] = dst[i] + x[i], one rounding each: the result does not depend on how the
// payload was split). It adds straight from gRPC's receive buffers (r.Peek, no copy) wherever
// their values are 4-byte aligned, which newOutFrame's padding arranges; misaligned runs (and,
// on big-endian hosts, every run) are staged through scratch, and a value split between two
// buffers is assembled on its own. parts is reused storage for the buffer views.
func addFrom(r *mem.Reader, dst, scratch []float32, parts [][]byte) ([][]byte, error) {
	n := 4 * len(dst)
	parts, err := r.Peek(n, parts[:0])
	if err != nil {
		return parts, fmt.Errorf("%w: %v", errMalformed, err)
	}
	var carry [4]byte
	nc := 0 // bytes of a split value held in carry
	for _, p := range parts {
		if nc > 0 {
			k := copy(carry[nc:], p)
			nc += k
			p = p[k:]
			if nc < 4 {
				continue
			}
			dst[0] += math.Float32frombits(binary.LittleEndian.Uint32(carry[:]))
			dst = dst[1:]
			nc = 0
		}
		m := len(p) / 4
		addBytes(dst[:m], p[:4*m], scratch)
		dst = dst[m:]
		nc = copy(carry[:], p[4*m:])
	}
	if _, err := r.Discard(n); err != nil {
		return parts, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return parts, nil
}

// addBytes adds the little-endian float32 values b (4*len(dst) bytes) into dst.
func addBytes(dst []float32, b []byte, scratch []float32) {
	if len(dst) == 0 {
		return
	}
	if littleEndian && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		x := unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(dst))
		blas.Saxpy(len(dst), 1, x, 1, dst, 1)
		return
	}
	for len(dst) > 0 {
		k := min(len(dst), len(scratch))
		copy(bytesOf(scratch[:k]), b)
		fixEndian(scratch[:k])
		blas.Saxpy(k, 1, scratch[:k], 1, dst[:k], 1)
		dst, b = dst[k:], b[4*k:]
	}
}
