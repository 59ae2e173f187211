package allreduce

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"ddpm/api"
)

// Transport tuning, on purpose rather than by default. The HTTP/2 flow-control windows hold
// many sub-chunks in flight (setting them also turns off gRPC's BDP probing, which starts at
// 64 KiB and grows slowly); 1 MiB socket buffers cut syscalls per byte. A frame is at most
// MaxChunkBytes of payload plus a header of under 128 bytes; the receive limit is stated,
// not inherited.
const (
	streamWindow = 16 << 20
	connWindow   = 32 << 20
	ioBuffer     = 1 << 20
	readBuffer   = 1 << 20
	// MaxChunkBytes is the largest Config.ChunkBytes.
	MaxChunkBytes = 4 << 20
	// maxRecvFrame is the server's receive limit: the largest frame plus its header.
	maxRecvFrame = MaxChunkBytes + 4096
	// maxSignal bounds a Signal (the only message a client receives).
	maxSignal = 64 << 10
)

// ringSendBuffer is the SO_SNDBUF of a ring's socket to its successor (Linux doubles it: 1 MiB in
// the kernel's accounting, about one sub-chunk in flight). A fixed buffer turns off the kernel's
// send-buffer autotuning, which grows it to tcp_wmem's limit (4 MiB here): with less data queued,
// the pages the kernel copies the payload into are reused while still in cache. Measured with
// `ddpm bench allreduce` on 2 cores, alternating builds: direct connections at 4 ranks 143 MB 1.8
// ns of CPU per buffer byte against 2.4 (busbw 1.5-1.6 GB/s against 1.15), 2 ranks 3.0 GB/s
// against 2.4; grpc-go's transport 3.1 against 4.1 ns/B at 4 ranks (0.95 against 0.69 GB/s),
// 1.9-2.3 against 1.5 GB/s at 2; 256 KiB, 1 MiB and 2 MiB did worse, and so did fixing the receive
// buffer. A megabyte in flight still covers a 10 Gb/s link with under 0.8 ms of round trip.
const ringSendBuffer = 512 << 10

// ServerOptions are the grpc.ServerOptions the ring needs on the process's server: flow-control
// windows, I/O buffer sizes, a receive limit that fits the largest frame, and the ring's
// buffer pool for the buffers gRPC reads frames into (it hands them out without clearing them;
// see framePool). They apply to every service on that server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.WriteBufferSize(ioBuffer),
		grpc.ReadBufferSize(readBuffer),
		grpc.MaxRecvMsgSize(maxRecvFrame),
		experimental.BufferPool(framePool),
	}
}

// EndpointOption configures Register.
type EndpointOption func(*Endpoint)

// WithAttachTimeout sets how long an inbound stream waits for this process to build the ring
// of the stream's generation before it is refused (default 30 s). Peers build their rings at
// slightly different times; this is the slack.
func WithAttachTimeout(d time.Duration) EndpointOption {
	return func(e *Endpoint) { e.attachTimeout = d }
}

// Endpoint is the ring service of one process. It routes each inbound stream to the Ring of
// the stream's generation and refuses streams of older generations.
type Endpoint struct {
	api.UnimplementedRingServer
	attachTimeout time.Duration

	mu      sync.Mutex
	latest  uint64           // highest generation a ring was built for
	rings   map[uint64]*Ring // live rings (at most the latest one, in practice)
	changed chan struct{}    // closed and replaced whenever rings changes
}

// Register creates the process's Endpoint and registers the ring service on s. Call it once
// per server, before s.Serve.
func Register(s *grpc.Server, opts ...EndpointOption) *Endpoint {
	e := &Endpoint{attachTimeout: 30 * time.Second, rings: map[uint64]*Ring{}, changed: make(chan struct{})}
	for _, o := range opts {
		o(e)
	}
	api.RegisterRingServer(s, e)
	return e
}

// add makes r the endpoint's ring for its generation and returns the older rings to close.
func (e *Endpoint) add(r *Ring) ([]*Ring, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := r.cfg.Generation
	if g < e.latest {
		return nil, fmt.Errorf("%w: generation %d is older than %d", ErrStaleGeneration, g, e.latest)
	}
	if _, ok := e.rings[g]; ok {
		return nil, fmt.Errorf("%w: generation %d already has a ring", ErrInvalidConfig, g)
	}
	var old []*Ring
	for og, or := range e.rings {
		old = append(old, or)
		delete(e.rings, og)
	}
	e.latest = g
	e.rings[g] = r
	close(e.changed)
	e.changed = make(chan struct{})
	return old, nil
}

func (e *Endpoint) remove(r *Ring) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rings[r.cfg.Generation] == r {
		delete(e.rings, r.cfg.Generation)
	}
}

// await returns the ring of generation g, waiting for it to be built.
func (e *Endpoint) await(ctx context.Context, g uint64) (*Ring, error) {
	timer := time.NewTimer(e.attachTimeout)
	defer timer.Stop()
	for {
		e.mu.Lock()
		r, latest, changed := e.rings[g], e.latest, e.changed
		e.mu.Unlock()
		if g < latest || (g == latest && r == nil && latest != 0) {
			return nil, status.Errorf(codes.FailedPrecondition, "allreduce: generation %d is stale here (latest %d)", g, latest)
		}
		if r != nil {
			return r, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-timer.C:
			return nil, status.Errorf(codes.Unavailable, "allreduce: no ring for generation %d after %v", g, e.attachTimeout)
		}
	}
}

// Stream implements api.RingServer: the inbound stream from this rank's predecessor.
func (e *Endpoint) Stream(stream api.Ring_StreamServer) error { return e.serve(stream) }
