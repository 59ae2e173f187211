package allreduce

import (
	"errors"
	"fmt"
	"sync"

	"ddpm/api"
)

// errInactive marks a frame that arrived for an operation this rank has already given up.
var errInactive = errors.New("operation no longer active")

// opState is one AllReduce in flight. Its mutex guards every access to buf by the receive loop
// and the sender, so that once the operation is deactivated (failure or completion) neither
// touches the caller's buffer again.
type opState struct {
	r          *Ring
	id         uint64
	buf        []float32
	sched      Schedule
	chunkElems int
	recvTotal  int           // DATA frames to receive (and to send)
	ready      chan struct{} // one token per DATA frame received and applied
	recvDone   chan struct{} // closed after the last DATA frame was applied
	ackSent    chan struct{} // closed after the predecessor was sent this operation's acknowledgement
	refs       payloadRefs   // parts of buf that gRPC still holds for sending

	mu     sync.Mutex
	active bool
	sent   bool // the sender finished every frame
	next   int  // frames received so far (0: BEGIN expected)
	// position of the next expected DATA frame
	step, chunk int
}

func newOpState(r *Ring, id uint64, buf []float32) *opState {
	op := &opState{r: r, id: id, buf: buf, sched: Plan(r.world, r.rank, len(buf)),
		chunkElems: r.cfg.ChunkBytes / 4, recvDone: make(chan struct{}), ackSent: make(chan struct{}), active: true}
	for _, st := range op.sched.Steps {
		op.recvTotal += op.sched.chunks(st.Recv, op.chunkElems)
	}
	op.ready = make(chan struct{}, op.recvTotal)
	op.skipEmpty()
	return op
}

// skipEmpty advances (step, chunk) past steps whose segment is empty.
func (op *opState) skipEmpty() {
	for op.step < len(op.sched.Steps) && op.chunk >= op.sched.chunks(op.sched.Steps[op.step].Recv, op.chunkElems) {
		op.step++
		op.chunk = 0
	}
}

func (op *opState) mismatch(format string, a ...any) error {
	return fmt.Errorf("%w: rank %d, generation %d, operation %d: %s", ErrMismatch, op.r.rank, op.r.cfg.Generation, op.id,
		fmt.Sprintf(format, a...))
}

// begin implements frameSink: it validates h against the next frame this rank expects and
// returns where its payload goes. On success op.mu stays locked until end.
func (op *opState) begin(h *header, payloadBytes int) ([]float32, bool, error) {
	op.mu.Lock()
	if !op.active {
		op.mu.Unlock()
		return nil, false, fmt.Errorf("%w: rank %d: frame for operation %d", errInactive, op.r.rank, op.id)
	}
	dst, add, err := op.expect(h, payloadBytes)
	if err != nil {
		op.mu.Unlock()
		return nil, false, err
	}
	return dst, add, nil
}

func (op *opState) expect(h *header, payloadBytes int) ([]float32, bool, error) {
	if h.generation != op.r.cfg.Generation {
		return nil, false, op.mismatch("frame of generation %d", h.generation)
	}
	if h.op != op.id {
		return nil, false, op.mismatch("predecessor is at operation %d", h.op)
	}
	if h.length != uint64(len(op.buf)) {
		return nil, false, op.mismatch("length %d here, %d at rank %d", len(op.buf), h.length, op.r.prev())
	}
	if op.next == 0 {
		if h.kind != api.FrameKind_FRAME_KIND_BEGIN || payloadBytes != 0 {
			return nil, false, op.mismatch("want BEGIN, got %v", h)
		}
		return nil, false, nil
	}
	st := op.sched.Steps[op.step]
	off, n := op.sched.chunkRange(st.Recv, op.chunk, op.chunkElems)
	if h.kind != api.FrameKind_FRAME_KIND_DATA || int(h.step) != op.step || int(h.segment) != st.Recv ||
		int(h.chunk) != op.chunk || h.offset != uint64(off) || payloadBytes != 4*n {
		return nil, false, op.mismatch("want DATA step=%d segment=%d chunk=%d offset=%d bytes=%d, got %v bytes=%d",
			op.step, st.Recv, op.chunk, off, 4*n, h, payloadBytes)
	}
	return op.buf[off : off+n], st.Phase == ReduceScatter, nil
}

// unlock and lock implement frameSink: op.mu is released while a payload is read from the
// network, and retaken (if op is still active) to apply it.
func (op *opState) unlock() { op.mu.Unlock() }

func (op *opState) lock() bool {
	op.mu.Lock()
	if !op.active {
		op.mu.Unlock()
		return false
	}
	return true
}

// end implements frameSink: the payload is applied; advance and release op.mu.
func (op *opState) end() {
	if op.next > 0 {
		op.chunk++
		op.ready <- struct{}{} // never blocks: capacity recvTotal
	}
	op.next++
	op.skipEmpty()
	if op.next == op.recvTotal+1 {
		close(op.recvDone)
	}
	op.mu.Unlock()
}

// send writes this rank's BEGIN and DATA frames in plan order. A DATA frame of step s > 0
// carries a chunk received at step s-1, so it waits for one token per frame. Payloads are not
// copied: gRPC reads them from the caller's buffer, which is safe because (a) a chunk is sent
// only after its last change here (reduce-scatter adds into a chunk before forwarding it; the
// all-gather overwrite of a chunk this rank sent earlier can only arrive after the successor
// has read that send, since the overwrite is computed from it), and (b) AllReduce does not
// return until gRPC has released every payload (op.refs).
func (r *Ring) send(op *opState) {
	h := header{kind: api.FrameKind_FRAME_KIND_BEGIN, generation: r.cfg.Generation, op: op.id, length: uint64(len(op.buf))}
	if err := r.out.SendMsg(newOutFrame(&h, nil, nil)); err != nil {
		r.sendFailed(err)
		return
	}
	h.kind = api.FrameKind_FRAME_KIND_DATA
	for s, st := range op.sched.Steps {
		nc := op.sched.chunks(st.Send, op.chunkElems)
		for c := range nc {
			if s > 0 {
				select {
				case <-op.ready:
				case <-r.failed:
					return
				}
			}
			off, n := op.sched.chunkRange(st.Send, c, op.chunkElems)
			h.step, h.segment, h.chunk, h.offset = uint32(s), uint32(st.Send), uint32(c), uint64(off)
			op.mu.Lock()
			if !op.active {
				op.mu.Unlock()
				return
			}
			f := newOutFrame(&h, op.buf[off:off+n], &op.refs)
			op.mu.Unlock()
			if err := r.out.SendMsg(f); err != nil {
				r.sendFailed(err)
				return
			}
		}
	}
	op.mu.Lock()
	op.sent = true
	op.mu.Unlock()
}

// finished reports whether the operation has ended (completed or failed) on this rank.
func (op *opState) finished() bool {
	op.mu.Lock()
	defer op.mu.Unlock()
	return !op.active
}

func (op *opState) wasSent() bool {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.sent
}

func (r *Ring) sendFailed(err error) {
	r.fail(fmt.Errorf("%w: rank %d: sending to successor %d: %v", ErrPeerLost, r.rank, r.next(), err),
		api.AbortCode_ABORT_CODE_PEER_LOST)
}
