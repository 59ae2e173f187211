package allreduce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"ddpm/api"
)

// Defaults of Config. Each chunk is one gRPC message, and a message costs CPU at both ends
// whatever its size: on 2 cores, 1 MiB chunks took 10-20% less CPU per byte than 256 KiB ones
// (`ddpm bench allreduce --chunk-bytes`, 2 and 4 ranks, 64 MiB and 143 MB), and a 143 MB
// buffer still has dozens of chunks per segment to pipeline.
const (
	DefaultTimeout    = 30 * time.Second
	DefaultChunkBytes = 1 << 20
)

// Config describes one rank's ring of one generation.
type Config struct {
	// Generation numbers the cluster's ring; every rank of the ring uses the same one, and a
	// newer generation supersedes this one (ErrStaleGeneration).
	Generation uint64
	// Rank is this process's index in Peers.
	Rank int
	// Peers are the gRPC addresses (host:port) of all ranks in ring order; len(Peers) is the
	// world size. Rank sends to Peers[(Rank+1)%N] and receives from Peers[(Rank-1)%N].
	Peers []string
	// Timeout bounds one AllReduce call, connection set-up included (default 30 s). A call that
	// has no result by then fails with ErrPeerLost on this rank and aborts the ring.
	Timeout time.Duration
	// DialOptions are appended to the ring's own (windows, buffer sizes, message-size limits).
	// They must choose the transport: tlsauth's Bundle.DialOptions() (mutual TLS and the join
	// secret, or plain text from an Insecure Bundle). A ring of more than one rank without them
	// is refused (ErrInvalidConfig): there is no plain-text default.
	DialOptions []grpc.DialOption
	// ChunkBytes is the pipelining unit: segments travel in frames of at most this many
	// payload bytes (default 1 MiB; a multiple of 4 in [4, MaxChunkBytes]). All ranks must
	// use the same value.
	ChunkBytes int
	// Direct makes the ring connect to its successor with its own HTTP/2 code (a direct
	// connection, see DirectListener: the same gRPC stream in DATA frames of up to 16 MiB,
	// about half the CPU per byte of grpc-go's 16 KiB ones) where the successor's server is
	// wrapped by DirectListener, and with grpc-go (DialOptions) where it is not. Plain text
	// only: leave it false when DialOptions use TLS.
	Direct bool
	// Log, if set, gets one line per ring once the stream to the successor is open: INFO
	// MsgRingOpen with the generation, rank, successor and transport ("direct" or "grpc"), or
	// WARN MsgRingFellBack when a ring with Direct met a successor that serves no direct
	// connections (an older release, or a server not on DirectListener) and runs on grpc-go's
	// transport instead, at about twice the CPU per byte.
	Log *slog.Logger
}

// Messages of Config.Log.
const (
	MsgRingOpen     = "ring stream to the successor open"
	MsgRingFellBack = "ring successor serves no direct connections; the ring runs on grpc-go's transport"
)

// Validate checks c and fills in defaults; errors wrap ErrInvalidConfig.
func (c *Config) Validate() error {
	if len(c.Peers) == 0 {
		return fmt.Errorf("%w: no peers", ErrInvalidConfig)
	}
	if c.Rank < 0 || c.Rank >= len(c.Peers) {
		return fmt.Errorf("%w: rank %d outside [0, %d)", ErrInvalidConfig, c.Rank, len(c.Peers))
	}
	if len(c.Peers) > 1 && len(c.DialOptions) == 0 {
		return fmt.Errorf("%w: no DialOptions for %d peers (pass tlsauth's Bundle.DialOptions())", ErrInvalidConfig, len(c.Peers))
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < 0 {
		return fmt.Errorf("%w: timeout %v", ErrInvalidConfig, c.Timeout)
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
	}
	if c.ChunkBytes < 4 || c.ChunkBytes > MaxChunkBytes || c.ChunkBytes%4 != 0 {
		return fmt.Errorf("%w: chunk bytes %d (want a multiple of 4 in [4, %d])", ErrInvalidConfig, c.ChunkBytes, MaxChunkBytes)
	}
	return nil
}

// Ring is one rank's member of one generation's ring. AllReduce calls are serialized; Close
// may be called from any goroutine, at any time.
type Ring struct {
	cfg    Config
	ep     *Endpoint
	world  int
	rank   int
	ctx    context.Context // lives until Close; carries the outbound stream
	cancel context.CancelFunc
	// outCtx carries the outbound stream; cancelled early only to make gRPC drop frames
	// that reference a failed operation's buffer.
	outCtx    context.Context
	outCancel context.CancelFunc
	conn      *grpc.ClientConn
	wg        sync.WaitGroup // every goroutine the ring started, and inbound handlers

	opMu sync.Mutex // serializes AllReduce
	ops  uint64     // operations started

	outReady chan struct{} // closed once the outbound stream is open and HELLO sent
	out      outboundStream
	inReady  chan struct{} // closed once the predecessor's stream is attached
	recvOps  chan *opState // AllReduce hands each operation to the inbound receive loop
	acks     chan uint64   // completion acknowledgements from the successor
	closed   chan struct{} // closed by Close
	failed   chan struct{} // closed by the first failure
	failOnce sync.Once
	err      error // the failure that broke the ring; read after <-failed
	sigOnce  sync.Once

	mu      sync.Mutex
	in      inboundStream // the inbound stream, while its handler runs
	cur     *opState      // the operation in flight, or the last one
	isClose bool
	// A failure applies from an operation on: a peer that completed operation k and then
	// left breaks k+1, not k. poison is the failure recorded with the earliest such
	// operation; it breaks the ring (failed) once this rank's operation reaches poisonFrom.
	poison     error
	poisonFrom uint64
	lastRecv   uint64 // the last operation whose frames all arrived here
	lastAcked  uint64 // the last operation the successor acknowledged

	inMu   sync.Mutex // serializes SendMsg on in
	inDone bool       // the inbound handler returned: in must not be used
}

// NewRing builds this process's ring for cfg.Generation on ep, closing the endpoint's rings of
// older generations (their calls in flight fail with ErrStaleGeneration). It does not wait for
// the peers: the first AllReduce does, within its Timeout. Errors wrap ErrInvalidConfig or
// ErrStaleGeneration.
func NewRing(ep *Endpoint, cfg Config) (*Ring, error) {
	if ep == nil {
		panic("allreduce: NewRing with nil Endpoint")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Peers = append([]string(nil), cfg.Peers...)
	r := &Ring{
		cfg: cfg, ep: ep, world: len(cfg.Peers), rank: cfg.Rank,
		outReady: make(chan struct{}), inReady: make(chan struct{}), recvOps: make(chan *opState), acks: make(chan uint64, 1),
		closed: make(chan struct{}), failed: make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.outCtx, r.outCancel = context.WithCancel(r.ctx)
	if r.world > 1 {
		opts := append([]grpc.DialOption{
			grpc.WithInitialWindowSize(streamWindow),
			grpc.WithInitialConnWindowSize(connWindow),
			grpc.WithWriteBufferSize(ioBuffer),
			grpc.WithReadBufferSize(readBuffer),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxRecvFrame), grpc.MaxCallRecvMsgSize(maxSignal)),
			experimental.WithBufferPool(framePool),
			grpc.WithContextDialer(dialRing),
		}, cfg.DialOptions...)
		conn, err := grpc.NewClient(cfg.Peers[(r.rank+1)%r.world], opts...)
		if err != nil {
			r.cancel()
			return nil, fmt.Errorf("%w: successor %q: %v", ErrInvalidConfig, cfg.Peers[(r.rank+1)%r.world], err)
		}
		r.conn = conn
	}
	old, err := ep.add(r)
	if err != nil {
		r.cancel()
		if r.conn != nil {
			r.conn.Close()
		}
		return nil, err
	}
	for _, o := range old {
		o.shutdown(ErrStaleGeneration, api.AbortCode_ABORT_CODE_STALE_GENERATION,
			fmt.Sprintf("superseded by generation %d", cfg.Generation))
	}
	if r.world > 1 {
		r.wg.Add(1)
		go r.runOutbound()
	}
	return r, nil
}

// Generation returns the ring's generation.
func (r *Ring) Generation() uint64 { return r.cfg.Generation }

// World returns the number of ranks.
func (r *Ring) World() int { return r.world }

// Rank returns this process's rank.
func (r *Ring) Rank() int { return r.rank }

func (r *Ring) next() int { return (r.rank + 1) % r.world }
func (r *Ring) prev() int { return (r.rank - 1 + r.world) % r.world }

// AllReduce replaces buf, on every rank, by the element-wise sum of all ranks' bufs. All ranks
// must call it in the same order with buffers of the same length; every rank ends with the
// same bytes. It returns within Config.Timeout (or ctx's deadline, if sooner); on error buf's
// contents are unspecified, the ring is broken, and the error wraps ErrPeerLost, ErrMismatch,
// ErrStaleGeneration, ErrClosed or ctx's error. Averaging is the caller's business.
func (r *Ring) AllReduce(ctx context.Context, buf []float32) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	select {
	case <-r.failed:
		return r.err
	default:
	}
	r.ops++
	if r.world == 1 {
		return nil
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	op := newOpState(r, r.ops, buf)
	err := r.run(ctx, caller, op)
	r.release(op, err)
	return err
}

// release returns once gRPC holds no part of op's buffer. After a success that is at once
// (every frame was acknowledged, so written). After a failure, frames may sit in gRPC's queue
// behind a successor that stopped reading; the outbound stream is then cancelled, which drops
// them. Both waits are bounded so a failure is still reported promptly.
func (r *Ring) release(op *opState, err error) {
	grace := time.Second
	if err != nil {
		grace = 20 * time.Millisecond
	}
	if op.refs.wait(grace) {
		return
	}
	r.outCancel()
	op.refs.wait(time.Second)
}

func (r *Ring) run(ctx, caller context.Context, op *opState) error {
	if err := r.waitReady(ctx, caller, op); err != nil {
		return err
	}
	r.mu.Lock()
	r.cur = op
	poisoned := r.poison != nil && op.id >= r.poisonFrom
	r.mu.Unlock()
	if poisoned {
		r.trigger()
		return r.err
	}
	select {
	case r.recvOps <- op:
	case <-r.failed:
		return r.err
	case <-ctx.Done():
		return r.giveUp(caller, op)
	}
	sendDone := make(chan struct{})
	r.mu.Lock()
	if r.isClose {
		r.mu.Unlock()
		<-r.failed
		return r.err
	}
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer close(sendDone)
		r.send(op)
	}()
	// Done when every frame arrived here, every frame was sent, and the successor acknowledged
	// receiving them all. A failure that races with completion loses: the signals of one
	// stream arrive in order, so an acknowledgement always precedes the stream's end.
	acked := false
	// Waiting for the acknowledgement this rank sends (not only for the last frame) keeps
	// it ahead of anything this rank does next, such as closing its streams.
	recvDone, sent := op.ackSent, sendDone // set to nil once seen
	for !acked || recvDone != nil || sent != nil {
		select {
		case <-recvDone:
			recvDone = nil
		case <-sent:
			sent = nil
			if !op.wasSent() {
				<-r.failed
				return r.err
			}
		case id := <-r.acks:
			if id != op.id {
				r.fail(op.mismatch("successor acknowledged operation %d", id), api.AbortCode_ABORT_CODE_MISMATCH)
				<-r.failed
				return r.err
			}
			acked = true
		case <-r.failed:
			return r.err
		case <-ctx.Done():
			return r.giveUp(caller, op)
		}
	}
	op.mu.Lock()
	op.active = false
	op.mu.Unlock()
	return nil
}

func (r *Ring) waitReady(ctx, caller context.Context, op *opState) error {
	for _, ch := range []chan struct{}{r.outReady, r.inReady} {
		select {
		case <-ch:
		case <-r.failed:
			return r.err
		case <-ctx.Done():
			return r.giveUp(caller, op)
		}
	}
	return nil
}

// giveUp fails the ring because the operation's context ended: the caller's cancellation or
// deadline (a context error), or else the ring's Timeout (ErrPeerLost).
func (r *Ring) giveUp(caller context.Context, op *opState) error {
	if err := caller.Err(); err != nil {
		r.fail(fmt.Errorf("allreduce: rank %d: operation %d (generation %d): %w", r.rank, op.id, r.cfg.Generation, err),
			api.AbortCode_ABORT_CODE_ABORTED)
	} else {
		r.fail(fmt.Errorf("%w: rank %d: no result for operation %d within %v (generation %d)",
			ErrPeerLost, r.rank, op.id, r.cfg.Timeout, r.cfg.Generation), api.AbortCode_ABORT_CODE_PEER_LOST)
	}
	<-r.failed
	return r.err
}

// fail breaks the ring now: the operation in flight, or the one being set up, fails.
func (r *Ring) fail(err error, code api.AbortCode) {
	r.mu.Lock()
	var from uint64
	if r.cur != nil {
		from = r.cur.id
	}
	r.mu.Unlock()
	r.failAt(err, code, uint32(r.rank), from)
	r.trigger()
}

// failAt records a failure that applies from operation `from` on, tells the predecessor (which
// forwards it, so the whole ring learns the cause), and breaks the ring at once if this rank
// has already started that operation.
func (r *Ring) failAt(err error, code api.AbortCode, origin uint32, from uint64) {
	r.mu.Lock()
	if r.poison == nil || from < r.poisonFrom {
		r.poison, r.poisonFrom = err, from
	}
	now := r.cur != nil && r.cur.id >= r.poisonFrom
	in := r.in
	r.mu.Unlock()
	if in != nil {
		r.sigOnce.Do(func() {
			sig := &api.Signal{Generation: r.cfg.Generation, Op: from, Code: code, OriginRank: origin, Reason: err.Error()}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				_ = r.signalPrev(sig) // best effort: the predecessor may be gone
			}()
		})
	}
	if now {
		r.trigger()
	}
}

// trigger breaks the ring with the recorded failure and stops the operation in flight from
// touching its buffer.
func (r *Ring) trigger() {
	r.failOnce.Do(func() {
		r.mu.Lock()
		r.err = r.poison
		op := r.cur
		r.mu.Unlock()
		if op != nil {
			op.mu.Lock() // waits for a chunk being applied
			op.active = false
			op.mu.Unlock()
		}
		close(r.failed)
	})
}

// shutdown fails the ring with cause and releases everything it holds.
func (r *Ring) shutdown(cause error, code api.AbortCode, why string) {
	r.mu.Lock()
	if r.isClose {
		r.mu.Unlock()
		return
	}
	r.isClose = true
	var from uint64 = 1
	if r.cur != nil {
		from = r.cur.id
		if r.cur.finished() {
			from++
		}
	}
	r.mu.Unlock()
	r.failAt(fmt.Errorf("%w: rank %d, generation %d: %s", cause, r.rank, r.cfg.Generation, why), code, uint32(r.rank), from)
	r.mu.Lock()
	if r.poison == nil || r.poisonFrom > from {
		r.poisonFrom = from
	}
	r.poison = fmt.Errorf("%w: rank %d, generation %d: %s", cause, r.rank, r.cfg.Generation, why)
	r.mu.Unlock()
	r.trigger() // this rank's own calls fail from now on, with the cause of the close
	close(r.closed)
	r.cancel()
	r.ep.remove(r)
	r.wg.Wait()
	if r.conn != nil {
		r.conn.Close()
	}
}

// Close ends the ring: a call in flight fails with ErrClosed, streams are closed and Close
// waits for the ring's goroutines to finish. It is idempotent and returns nil. Close does not
// wait for queued bytes to leave the process: before exiting, stop the grpc.Server with
// GracefulStop, so the acknowledgement of the last operation reaches the predecessor.
func (r *Ring) Close() error {
	r.shutdown(ErrClosed, api.AbortCode_ABORT_CODE_ABORTED, "closed")
	return nil
}

// runOutbound opens the stream to the successor, sends HELLO, then reads the successor's
// signals until the stream ends.
func (r *Ring) runOutbound() {
	defer r.wg.Done()
	s, err := r.openOutbound()
	if err != nil {
		r.outboundEnded(err)
		return
	}
	if l := r.cfg.Log; l != nil {
		_, direct := s.(*directClient)
		attrs := []any{"generation", r.cfg.Generation, "rank", r.rank, "successor", r.cfg.Peers[r.next()],
			"transport", map[bool]string{true: "direct", false: "grpc"}[direct]}
		if r.cfg.Direct && !direct {
			l.Warn(MsgRingFellBack, attrs...)
		} else {
			l.Info(MsgRingOpen, attrs...)
		}
	}
	hello := &header{kind: api.FrameKind_FRAME_KIND_HELLO, generation: r.cfg.Generation,
		fromRank: uint32(r.rank), world: uint32(r.world)}
	if err := s.SendMsg(newOutFrame(hello, nil, nil)); err != nil {
		r.outboundEnded(s.RecvMsg(new(api.Signal)))
		return
	}
	r.out = s
	close(r.outReady)
	for {
		sig := new(api.Signal)
		if err := s.RecvMsg(sig); err != nil {
			r.outboundEnded(err)
			return
		}
		if sig.Generation != r.cfg.Generation {
			continue
		}
		if sig.DoneOp != 0 {
			r.mu.Lock()
			r.lastAcked = sig.DoneOp
			r.mu.Unlock()
			select {
			case r.acks <- sig.DoneOp:
			default: // an acknowledgement nobody awaits: the previous one was never taken
				r.fail(fmt.Errorf("%w: rank %d: unexpected acknowledgement of operation %d", ErrMismatch, r.rank, sig.DoneOp),
					api.AbortCode_ABORT_CODE_MISMATCH)
			}
			continue
		}
		r.failAt(remoteErr(sig), sig.Code, sig.OriginRank, sig.Op)
	}
}

// openOutbound opens the stream to the successor: a direct connection if Config.Direct and
// the successor serves one, else a gRPC stream of grpc-go's. Like gRPC's WaitForReady, it
// waits for a successor not yet listening, until the ring's context ends.
func (r *Ring) openOutbound() (outboundStream, error) {
	if r.cfg.Direct {
		addr := r.cfg.Peers[r.next()]
		delay := 10 * time.Millisecond
		for {
			dc, err := dialDirect(r.outCtx, addr)
			if err == nil {
				return dc, nil
			}
			if errors.Is(err, errNotDirect) {
				directCounts.fellBack.Add(1)
				break
			}
			select {
			case <-time.After(delay):
				delay = min(2*delay, 500*time.Millisecond)
			case <-r.outCtx.Done():
				return nil, status.FromContextError(r.outCtx.Err()).Err()
			}
		}
	}
	desc := &api.Ring_ServiceDesc.Streams[0]
	return r.conn.NewStream(r.outCtx, desc, api.Ring_Stream_FullMethodName,
		grpc.WaitForReady(true), grpc.CallContentSubtype(codecName))
}

// remoteError is a failure detected by another rank and forwarded round the ring: its message
// is the origin's, its sentinel comes from the signal's code.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func remoteErr(sig *api.Signal) error {
	if sig.Code == api.AbortCode_ABORT_CODE_ABORTED || sig.Code == api.AbortCode_ABORT_CODE_UNSPECIFIED {
		return fmt.Errorf("%w: rank %d gave up: %s", ErrPeerLost, sig.OriginRank, sig.Reason)
	}
	return &remoteError{sentinel: codeErr(sig.Code), msg: sig.Reason}
}

func codeErr(c api.AbortCode) error {
	switch c {
	case api.AbortCode_ABORT_CODE_MISMATCH:
		return ErrMismatch
	case api.AbortCode_ABORT_CODE_STALE_GENERATION:
		return ErrStaleGeneration
	}
	return ErrPeerLost
}

// outboundEnded handles the end of the successor's stream.
func (r *Ring) outboundEnded(err error) {
	select {
	case <-r.closed:
		return
	default:
	}
	switch status.Code(err) {
	case codes.FailedPrecondition:
		r.fail(fmt.Errorf("%w: rank %d: successor %d refused generation %d: %v",
			ErrStaleGeneration, r.rank, r.next(), r.cfg.Generation, err), api.AbortCode_ABORT_CODE_STALE_GENERATION)
	case codes.InvalidArgument:
		r.fail(fmt.Errorf("%w: rank %d: successor %d refused the stream: %v",
			ErrMismatch, r.rank, r.next(), err), api.AbortCode_ABORT_CODE_MISMATCH)
	default:
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("stream ended")
		}
		// Operations the successor acknowledged are complete there; the next ones cannot be.
		r.mu.Lock()
		from := r.lastAcked + 1
		r.mu.Unlock()
		r.failAt(fmt.Errorf("%w: rank %d: stream to successor %d (%s): %v",
			ErrPeerLost, r.rank, r.next(), r.cfg.Peers[r.next()], err), api.AbortCode_ABORT_CODE_PEER_LOST, uint32(r.rank), from)
	}
}

// serveInbound runs the predecessor's stream for the life of the ring.
func (r *Ring) serveInbound(stream inboundStream, hello *header) error {
	if int(hello.world) != r.world || int(hello.fromRank) != r.prev() {
		err := fmt.Errorf("%w: rank %d (world %d) got a stream from rank %d of world %d, want rank %d",
			ErrMismatch, r.rank, r.world, hello.fromRank, hello.world, r.prev())
		r.fail(err, api.AbortCode_ABORT_CODE_MISMATCH)
		return status.Error(codes.InvalidArgument, err.Error())
	}
	r.mu.Lock()
	if r.isClose {
		r.mu.Unlock()
		return status.Errorf(codes.FailedPrecondition, "allreduce: rank %d, generation %d: ring closed", r.rank, r.cfg.Generation)
	}
	if r.in != nil {
		r.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "allreduce: rank %d, generation %d: predecessor already attached", r.rank, r.cfg.Generation)
	}
	r.in = stream
	r.wg.Add(2) // this handler and the receive loop
	r.mu.Unlock()
	defer r.wg.Done()
	close(r.inReady)
	recvEnded := make(chan struct{})
	go func() {
		defer r.wg.Done()
		defer close(recvEnded)
		r.receive(stream)
	}()
	select {
	case <-r.closed:
	case <-recvEnded:
		<-r.closed
	case <-stream.Context().Done():
		// Operations whose frames all arrived are unaffected; the next ones cannot complete.
		r.mu.Lock()
		from := r.lastRecv + 1
		r.mu.Unlock()
		r.failAt(fmt.Errorf("%w: rank %d: stream from predecessor %d ended: %v",
			ErrPeerLost, r.rank, r.prev(), stream.Context().Err()), api.AbortCode_ABORT_CODE_PEER_LOST, uint32(r.rank), from)
		<-r.closed
	}
	r.inMu.Lock()
	r.inDone = true // the signal sender must not use the stream once we return
	r.inMu.Unlock()
	return status.Errorf(codes.Canceled, "allreduce: rank %d closed generation %d", r.rank, r.cfg.Generation)
}

// receive is the inbound loop: for each operation, read its BEGIN and DATA frames in plan
// order, applying each payload to the operation's buffer as it is decoded.
func (r *Ring) receive(stream inboundStream) {
	f := &inFrame{}
	for {
		var op *opState
		select {
		case op = <-r.recvOps:
		case <-r.failed:
			return
		}
		f.sink = op
		for range op.recvTotal + 1 {
			if err := stream.RecvMsg(f); err != nil {
				if errors.Is(err, errMalformed) || status.Code(err) == codes.Internal || status.Code(err) == codes.ResourceExhausted {
					r.fail(fmt.Errorf("%w: rank %d: from predecessor %d: %v", ErrMismatch, r.rank, r.prev(), err),
						api.AbortCode_ABORT_CODE_MISMATCH)
				} else {
					r.fail(fmt.Errorf("%w: rank %d: stream from predecessor %d (%v)", ErrPeerLost, r.rank, r.prev(), err),
						api.AbortCode_ABORT_CODE_PEER_LOST)
				}
				return
			}
			if f.err != nil {
				code := api.AbortCode_ABORT_CODE_MISMATCH
				if errors.Is(f.err, errInactive) {
					code = api.AbortCode_ABORT_CODE_ABORTED
				}
				r.fail(f.err, code)
				return
			}
		}
		r.mu.Lock()
		r.lastRecv = op.id
		r.mu.Unlock()
		if err := r.signalPrev(&api.Signal{Generation: r.cfg.Generation, DoneOp: op.id}); err != nil {
			r.failAt(fmt.Errorf("%w: rank %d: acknowledging to predecessor %d: %v", ErrPeerLost, r.rank, r.prev(), err),
				api.AbortCode_ABORT_CODE_PEER_LOST, uint32(r.rank), op.id+1)
			return
		}
		close(op.ackSent)
	}
}

// signalPrev sends sig to the predecessor on the inbound stream, unless its handler returned.
func (r *Ring) signalPrev(sig *api.Signal) error {
	r.inMu.Lock()
	defer r.inMu.Unlock()
	if r.inDone {
		return errors.New("stream closed")
	}
	return r.in.SendMsg(sig)
}

// dialRing dials the connection to the successor, for grpc-go's transport and for direct
// connections alike, with the ring's fixed socket send buffer (ringSendBuffer).
func dialRing(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetWriteBuffer(ringSendBuffer) // best effort: the kernel's default otherwise
	}
	return nc, nil
}
