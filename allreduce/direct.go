package allreduce

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
)

// Direct connections: the ring's gRPC stream over the ring's own HTTP/2 code (h2.go) instead
// of grpc-go's transport, on plain-text TCP.
//
// Why: grpc-go cuts every message into 16 KiB DATA frames (a constant of its transport, for
// writing and for the largest frame it accepts), copies each into its write buffer and out of
// its read buffer, and hands each between goroutines. At 4 ranks on 2 cores that cost about 5
// ns of CPU per buffer byte against 2.5 for the same ring on bare TCP (bench/tcpring), and
// there CPU is bandwidth. A direct connection is the same protocol, gRPC over HTTP/2 (the
// same method, content-type, length-prefixed messages, trailers with grpc-status and flow
// control), with frames as large as HTTP/2 allows: a sub-chunk is one DATA frame written with
// one writev from the caller's buffer, and read from the socket into a staging buffer that is
// summed or copied into the destination.
//
// How the ends find each other: a direct client opens with HTTP/2's preface and a SETTINGS frame
// that carries a private setting (settingDirect); Endpoint.DirectListener, wrapped around the gRPC
// server's listener, serves connections that carry it and hands every other connection to
// grpc.Server unchanged. A direct client that meets a server without the setting twice (a plain
// grpc.Server, or an older ddpm; see dialDirect) closes that connection and uses grpc-go's. Only
// for plain text: a TLS server must not be wrapped (its ring would be served without TLS), and a
// ring whose DialOptions use TLS must not set Config.Direct.

// errNotDirect: the successor's server is not a DirectListener.
var errNotDirect = errors.New("not a direct ring listener")

// directCounts counts direct connections, for tests: opened by a ring (dialed), given up for
// grpc-go's transport because the server was not a DirectListener (fellBack), and served by
// a DirectListener (served). The two switches make a direct client take any HTTP/2 server and
// a DirectListener serve any HTTP/2 client, so that tests can run each end against grpc-go's.
var directCounts struct {
	dialed, fellBack, served atomic.Int64
	anyServer, anyClient     atomic.Bool
}

// directStream is the outbound stream as the ring uses it: grpc.ClientStream's SendMsg and
// RecvMsg, on a gRPC stream of grpc-go's or on a direct connection.
type outboundStream interface {
	SendMsg(m any) error
	RecvMsg(m any) error
}

// inboundStream is the inbound stream as the ring uses it.
type inboundStream interface {
	SendMsg(m any) error
	RecvMsg(m any) error
	Context() context.Context
}

// directClient is the client end of a direct connection: the ring's outbound stream.
type directClient struct {
	c    *h2conn
	in   streamIn
	stop func() bool
}

// dialDirect connects to addr and opens the ring's stream on a direct connection. It returns
// errNotDirect (the connection closed) if the server is not a DirectListener: one that
// answered without the setting twice in a row, since a DirectListener hands a connection whose
// first byte is late (classifyFirstByte after the accept: a client process starved of CPU) to
// grpc.Server, which would leave the ring on grpc-go's transport for its whole life. The
// connection is closed when ctx ends.
func dialDirect(ctx context.Context, addr string) (*directClient, error) {
	dc, err := dialDirectOnce(ctx, addr)
	if errors.Is(err, errNotDirect) {
		dc, err = dialDirectOnce(ctx, addr)
	}
	return dc, err
}

// dialDirectOnce is one attempt of dialDirect.
func dialDirectOnce(ctx context.Context, addr string) (*directClient, error) {
	nc, err := dialRing(ctx, addr)
	if err != nil {
		return nil, err
	}
	c := newH2Conn(nc, nil)
	dc := &directClient{c: c}
	dc.in = streamIn{c: c, headers: clientHeaders}
	// From here ctx's end closes the connection, set-up included: a ring closed while its
	// successor accepted and says nothing (a frozen process: the kernel accepts for it) must
	// not wait for the set-up's deadline.
	dc.stop = context.AfterFunc(ctx, dc.close)
	ok := false
	defer func() {
		if !ok {
			dc.stop()
			nc.Close()
		}
	}()
	// Set-up within the dial's bounds: a server that accepts and says nothing is not one.
	deadline := time.Now().Add(directHandshakeTimeout)
	if dl, has := ctx.Deadline(); has && dl.Before(deadline) {
		deadline = dl
	}
	nc.SetDeadline(deadline)
	if _, err := io.WriteString(nc, h2Preface); err != nil {
		return nil, err
	}
	if err := c.writeSettings(); err != nil {
		return nil, err
	}
	fh, err := c.readFrameHeader()
	if err != nil {
		return nil, err
	}
	if fh.typ != http2.FrameSettings || fh.flags.Has(http2.FlagSettingsAck) {
		return nil, fmt.Errorf("%w: the server opened with %v", errNotDirect, fh.typ)
	}
	if err := c.control(fh); err != nil {
		return nil, err
	}
	if c.peerDir != directVersion && !directCounts.anyServer.Load() {
		return nil, errNotDirect
	}
	if err := c.writeHeaders(false,
		hpack.HeaderField{Name: ":method", Value: "POST"},
		hpack.HeaderField{Name: ":scheme", Value: "http"},
		hpack.HeaderField{Name: ":path", Value: api.Ring_Stream_FullMethodName},
		hpack.HeaderField{Name: ":authority", Value: addr},
		hpack.HeaderField{Name: "content-type", Value: grpcContentType},
		hpack.HeaderField{Name: "te", Value: "trailers"},
	); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	directCounts.dialed.Add(1)
	ok = true
	return dc, nil
}

// directHandshakeTimeout bounds a direct connection's set-up: the settings exchange, and on the
// server the request and its first message (HELLO). A variable for tests.
var directHandshakeTimeout = 10 * time.Second

// clientHeaders handles the server's header blocks: response headers, then trailers.
func clientHeaders(fields []hpack.HeaderField, endStream bool) error {
	if endStream {
		return trailerStatus(fields)
	}
	if s, _ := headerValue(fields, ":status"); s != "200" {
		return status.Errorf(codes.Unavailable, "HTTP status %q", s)
	}
	return nil
}

// SendMsg sends an encoded frame (*outFrame), releasing its buffers once written.
func (d *directClient) SendMsg(m any) error {
	f, ok := m.(*outFrame)
	if !ok {
		return fmt.Errorf("allreduce: direct stream cannot send %T", m)
	}
	data := f.data
	f.data = nil
	defer data.Free()
	parts := make([][]byte, len(data))
	for i, b := range data {
		parts[i] = b.ReadOnlyData()
	}
	if err := d.c.writeMessage(parts); err != nil {
		d.c.fail(err)
		return status.Errorf(codes.Unavailable, "sending: %v", err)
	}
	return nil
}

// RecvMsg receives a Signal from the server; the stream's end is its gRPC status as an error.
func (d *directClient) RecvMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("allreduce: direct stream cannot receive %T", m)
	}
	err := recvProto(&d.in, msg, maxSignal)
	if err != nil {
		d.c.fail(err)
		if _, isStatus := status.FromError(err); !isStatus || errors.Is(err, io.EOF) {
			err = status.Errorf(codes.Unavailable, "direct connection: %v", err)
		}
	}
	return err
}

func (d *directClient) close() {
	d.c.fail(ErrClosed)
	d.c.nc.Close()
}

// recvProto reads one gRPC message of at most limit bytes into m.
func recvProto(s *streamIn, m proto.Message, limit int) error {
	n, err := s.beginMsg(limit)
	if err != nil {
		return err
	}
	b := make([]byte, n)
	if err := s.readFull(b); err != nil {
		return err
	}
	if err := proto.Unmarshal(b, m); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// directServerStream is the server end of a direct connection: the ring's inbound stream.
type directServerStream struct {
	c       *h2conn
	in      streamIn
	ctx     context.Context
	cancel  context.CancelFunc
	mu      sync.Mutex
	hdrSent bool
	// rmu is held by RecvMsg; ended (under rmu) is set once the handler returned, after
	// which RecvMsg fails at once.
	rmu          sync.Mutex
	ended        bool
	helloPending bool // the set-up's read deadline is still set (under rmu)
	scratch      []float32
}

// Context is cancelled when the stream's connection fails or its handler returns.
func (s *directServerStream) Context() context.Context { return s.ctx }

var responseHeaders = []hpack.HeaderField{
	{Name: ":status", Value: "200"},
	{Name: "content-type", Value: grpcContentType},
}

// SendMsg sends a Signal to the client.
func (s *directServerStream) SendMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("allreduce: direct stream cannot send %T", m)
	}
	b, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hdrSent {
		if err := s.c.writeHeaders(false, responseHeaders...); err != nil {
			return s.broke(err)
		}
		s.hdrSent = true
	}
	if err := s.c.writeMessage([][]byte{b}); err != nil {
		return s.broke(err)
	}
	return nil
}

// broke records a failure of the connection: the stream's context ends.
func (s *directServerStream) broke(err error) error {
	s.c.fail(err)
	s.cancel()
	return err
}

// RecvMsg receives a frame (*inFrame, its payload applied through the frame's sink) or
// another message.
func (s *directServerStream) RecvMsg(m any) error {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ended {
		return status.Error(codes.Canceled, "allreduce: the stream's handler returned")
	}
	var err error
	defer func() {
		if err == nil && s.helloPending {
			s.helloPending = false
			s.c.nc.SetReadDeadline(time.Time{})
		}
	}()
	if f, ok := m.(*inFrame); ok {
		err = s.recvFrame(f)
	} else if msg, ok := m.(proto.Message); ok {
		err = recvProto(&s.in, msg, maxRecvFrame)
	} else {
		return fmt.Errorf("allreduce: direct stream cannot receive %T", m)
	}
	if err != nil && !errors.Is(err, errMalformed) {
		s.broke(err)
	}
	return err
}

// directScratchElems sizes the staging buffer of a direct stream's payloads (1 MiB, one
// default sub-chunk: one read per frame).
const directScratchElems = 256 << 10

// recvFrame reads one Frame. Its payload is read from the socket into a staging buffer,
// without op.mu held (a read may wait for the network), then added or copied into the
// destination with op.mu held, piece by piece, while the operation is active.
func (s *directServerStream) recvFrame(f *inFrame) error {
	if _, err := s.in.beginMsg(maxRecvFrame); err != nil {
		return err
	}
	f.h, f.err = header{}, nil
	payload, err := decodeHeader(&s.in, &f.h) // malformed, or a connError (readErr)
	if err != nil {
		return err
	}
	if f.sink == nil {
		if payload > 0 {
			f.err = fmt.Errorf("%w: unexpected payload in %v", ErrMismatch, &f.h)
			_, err = s.in.Discard(payload)
		}
		return err
	}
	dst, add, err := f.sink.begin(&f.h, payload)
	if err != nil {
		f.err = err
		_, err = s.in.Discard(payload)
		return err
	}
	if len(dst) == 0 {
		f.sink.end()
		return nil
	}
	f.sink.unlock()
	if s.scratch == nil {
		s.scratch = make([]float32, directScratchElems)
	}
	for {
		k := min(len(dst), len(s.scratch))
		if err := s.in.readFull(bytesOf(s.scratch[:k])); err != nil {
			return err
		}
		fixEndian(s.scratch[:k])
		if !f.sink.lock() {
			f.err = errInactiveFrame(&f.h)
			_, err := s.in.Discard(4 * (len(dst) - k))
			return err
		}
		if add {
			blas.Saxpy(k, 1, s.scratch[:k], 1, dst[:k], 1)
		} else {
			copy(dst[:k], s.scratch[:k])
		}
		if dst = dst[k:]; len(dst) == 0 {
			break
		}
		f.sink.unlock()
	}
	f.sink.end()
	return nil
}

func errInactiveFrame(h *header) error {
	return fmt.Errorf("%w: frame %v", errInactive, h)
}

// finish ends the stream with the handler's result as its gRPC status (trailers).
func (s *directServerStream) finish(herr error) {
	st := status.Convert(herr)
	fields := []hpack.HeaderField{
		{Name: "grpc-status", Value: strconv.Itoa(int(st.Code()))},
		{Name: "grpc-message", Value: percentEncode(st.Message())},
	}
	s.mu.Lock()
	if !s.hdrSent {
		fields = append(append([]hpack.HeaderField(nil), responseHeaders...), fields...)
		s.hdrSent = true
	}
	s.mu.Unlock()
	_ = s.c.writeHeaders(true, fields...) // best effort: the client may be gone
}

// DirectListener returns a listener for e's grpc.Server that serves the ring's direct
// connections itself and passes every other connection to the server as it came. Use it only
// for a server with plain-text credentials: the connections it serves bypass the server's
// credentials, interceptors and limits. Closing the returned listener (grpc.Server.Stop or
// GracefulStop does) closes lis and the direct connections.
func (e *Endpoint) DirectListener(lis net.Listener) net.Listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &directListener{Listener: lis, ep: e, conns: make(chan net.Conn), done: make(chan struct{}),
		ctx: ctx, cancel: cancel, live: map[net.Conn]struct{}{}}
}

type directListener struct {
	net.Listener
	ep        *Endpoint
	conns     chan net.Conn // connections for grpc.Server
	start     sync.Once
	done      chan struct{} // closed when Accept fails for good or Close is called
	closeOnce sync.Once
	err       error           // why done closed
	ctx       context.Context // the direct streams' contexts derive from it; cancelled with done
	cancel    context.CancelFunc

	mu   sync.Mutex
	live map[net.Conn]struct{} // connections being classified or served directly
}

func (l *directListener) Accept() (net.Conn, error) {
	l.start.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *directListener) end(err error) {
	l.closeOnce.Do(func() {
		l.err = err
		close(l.done)
		l.cancel()
		l.mu.Lock()
		for c := range l.live {
			c.Close()
		}
		l.mu.Unlock()
	})
}

// Close closes the listener and the direct connections. As grpc.Server.Stop does not wait
// for its handlers, Close does not wait for the direct ones: each returns once its ring is
// closed.
func (l *directListener) Close() error {
	err := l.Listener.Close()
	l.end(net.ErrClosed)
	return err
}

func (l *directListener) acceptLoop() {
	var delay time.Duration
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			// As grpc.Server does: wait out temporary errors, end on others.
			if ne, ok := err.(interface{ Temporary() bool }); ok && ne.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-l.done:
					return
				}
			}
			l.end(err)
			return
		}
		delay = 0
		if !l.track(nc) {
			nc.Close()
			return
		}
		go l.classify(nc)
	}
}

// track records a live connection; false once the listener is closed.
func (l *directListener) track(nc net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.live[nc] = struct{}{}
	return true
}

func (l *directListener) untrack(nc net.Conn) {
	l.mu.Lock()
	delete(l.live, nc)
	l.mu.Unlock()
}

// classifyFirstByte bounds the wait for a client's first byte: gRPC and TLS clients speak
// first, and a client that waits for the server is handed to grpc.Server after it. It is long
// enough for a client process starved of CPU for a while (a loaded 2-core machine): a direct
// client handed to grpc.Server twice runs its ring on grpc-go's transport for good.
const classifyFirstByte = 2 * time.Second

// classify reads the start of a connection: the HTTP/2 preface and a first SETTINGS frame
// with settingDirect make it direct; anything else goes to grpc.Server with the bytes read.
func (l *directListener) classify(nc net.Conn) {
	br := bufio.NewReaderSize(nc, h2ReadBuffer)
	direct := false
	nc.SetReadDeadline(time.Now().Add(classifyFirstByte))
	if b, err := br.Peek(1); err == nil && b[0] == h2Preface[0] {
		nc.SetReadDeadline(time.Now().Add(directHandshakeTimeout))
		direct = isDirectStart(br)
	}
	nc.SetReadDeadline(time.Time{})
	if direct {
		l.serveDirect(nc, br)
		return
	}
	l.untrack(nc)
	select {
	case l.conns <- &replayConn{Conn: nc, br: br}:
	case <-l.done:
		nc.Close()
	}
}

// isDirectStart reports whether br starts with the preface and a SETTINGS frame carrying
// settingDirect, reading no further than that frame.
func isDirectStart(br *bufio.Reader) bool {
	// The preface is matched as its bytes come: a client whose first byte is the preface's but
	// that sends something else (an HTTP/1.x POST), and then waits for an answer with fewer bytes
	// sent than a preface and a frame header, goes to grpc.Server at once rather than after
	// directHandshakeTimeout.
	for i := 1; i <= len(h2Preface); i++ {
		if b, err := br.Peek(i); err != nil || b[i-1] != h2Preface[i-1] {
			return false
		}
	}
	n := len(h2Preface) + h2HeaderLen
	b, err := br.Peek(n)
	if err != nil {
		return false
	}
	h := b[len(h2Preface):]
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if http2.FrameType(h[3]) != http2.FrameSettings || length%6 != 0 || length > 64*6 {
		return false
	}
	b, err = br.Peek(n + length)
	if err != nil {
		return false
	}
	if directCounts.anyClient.Load() {
		return true
	}
	for p := b[n:]; len(p) > 0; p = p[6:] {
		if http2.SettingID(uint16(p[0])<<8|uint16(p[1])) == settingDirect {
			return true
		}
	}
	return false
}

// replayConn is a connection whose first bytes were read into br: reads drain br first.
type replayConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(p)
		}
		c.br = nil
	}
	return c.Conn.Read(p)
}

// SyscallConn and CloseWrite reach the TCP connection under c, as gRPC's channelz (socket
// options) and a half-close expect of a *net.TCPConn.
func (c *replayConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// serveDirect runs a direct connection: settings, the request's headers, then e's ring
// handler on the stream; its result goes back as the stream's trailers.
func (l *directListener) serveDirect(nc net.Conn, br *bufio.Reader) {
	defer l.untrack(nc)
	defer nc.Close()
	directCounts.served.Add(1)
	c := newH2Conn(nc, br)
	// The stream's reader is the ring's receive loop, which also sends the acknowledgements
	// (and reads nothing meanwhile), and the handler cannot return while a signal is being
	// sent: a send waiting for a WINDOW_UPDATE could wait forever. The ring's signals are a
	// few bytes and a direct client opens its windows fully, so a peer that has not opened
	// them for a signal breaks the stream instead.
	c.noWait = true
	if _, err := br.Discard(len(h2Preface)); err != nil {
		return
	}
	if err := c.writeSettings(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(l.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { c.fail(ErrClosed) })
	defer stop()
	s := &directServerStream{c: c, ctx: ctx, cancel: cancel}
	s.in = streamIn{c: c, headers: func([]hpack.HeaderField, bool) error {
		return errors.New("HEADERS frame after the request's")
	}}
	nc.SetReadDeadline(time.Now().Add(directHandshakeTimeout))
	fields, endStream, err := readRequest(c)
	if err != nil {
		return
	}
	s.in.end = endStream // a request that ends the stream at once: RecvMsg gets io.EOF
	// The set-up's read deadline stays until the first message (HELLO) has been read: a client
	// that opens the stream and sends nothing is dropped then, not held until the listener
	// closes. RecvMsg clears it.
	s.helloPending = true
	var herr error
	if p, _ := headerValue(fields, ":path"); p != api.Ring_Stream_FullMethodName {
		herr = status.Errorf(codes.Unimplemented, "allreduce: direct connections serve %s only, not %q", api.Ring_Stream_FullMethodName, p)
	} else if ct, _ := headerValue(fields, "content-type"); !strings.HasPrefix(ct, "application/grpc") {
		herr = status.Errorf(codes.InvalidArgument, "allreduce: content-type %q", ct)
	} else {
		herr = l.ep.serve(s)
	}
	cancel()
	// As gRPC does when a handler returns: a RecvMsg still waiting (the ring's receive loop)
	// fails now, and none reads the connection after this.
	nc.SetReadDeadline(time.Now())
	s.rmu.Lock()
	s.ended = true
	s.rmu.Unlock()
	nc.SetReadDeadline(time.Time{})
	s.finish(herr)
	// Let the trailers reach the client before the connection goes: half-close, then wait a
	// little for the client to close its end (closing with unread bytes would reset it).
	if tc, ok := nc.(interface{ CloseWrite() error }); ok {
		tc.CloseWrite()
		nc.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, br)
	}
}

// readRequest reads frames up to the request's header block and returns it, and whether
// the request ended the stream (END_STREAM on its HEADERS frame: a client with nothing to send).
func readRequest(c *h2conn) ([]hpack.HeaderField, bool, error) {
	for {
		fh, err := c.readFrameHeader()
		if err != nil {
			return nil, false, err
		}
		switch fh.typ {
		case http2.FrameHeaders:
			if fh.stream != h2Stream {
				return nil, false, fmt.Errorf("stream %d", fh.stream)
			}
			fields, err := c.readHeaderBlock(fh)
			return fields, fh.flags.Has(http2.FlagHeadersEndStream), err
		case http2.FrameData, http2.FrameContinuation:
			return nil, false, fmt.Errorf("%v frame before the request's headers", fh.typ)
		default:
			if err := c.control(fh); err != nil {
				return nil, false, err
			}
		}
	}
}

// serve runs an inbound stream: its HELLO names the generation whose ring takes it.
func (e *Endpoint) serve(stream inboundStream) error {
	var hello inFrame
	if err := stream.RecvMsg(&hello); err != nil {
		return err
	}
	if hello.err != nil || hello.h.kind != api.FrameKind_FRAME_KIND_HELLO {
		return status.Errorf(codes.InvalidArgument, "allreduce: stream must open with HELLO, got %v", &hello.h)
	}
	r, err := e.await(stream.Context(), hello.h.generation)
	if err != nil {
		return err
	}
	return r.serveInbound(stream, &hello.h)
}
