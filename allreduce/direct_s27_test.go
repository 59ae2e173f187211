package allreduce

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
)

// forged is one end of a direct connection driven by x/net's http2.Framer, an HTTP/2
// implementation independent of h2.go, to send what the ring's own code never sends.
type forged struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

// s27Wait bounds a wait for something the test caused; it only bounds a hang.
const s27Wait = time.Minute

func newForged(t *testing.T, nc net.Conn) *forged {
	t.Helper()
	f := &forged{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	f.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil) // header blocks come whole, CONTINUATION merged
	f.fr.MaxHeaderListSize = 1 << 20
	f.henc = hpack.NewEncoder(&f.hbuf)
	nc.SetDeadline(time.Now().Add(s27Wait))
	t.Cleanup(func() { nc.Close() })
	return f
}

// forgedClient dials addr as a direct client: the preface, then SETTINGS with settingDirect
// and the given settings.
func forgedClient(t *testing.T, addr string, settings ...http2.Setting) *forged {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := newForged(t, nc)
	f.fr.SetMaxReadFrameSize(16384) // what it advertises: the default
	if _, err := io.WriteString(nc, h2Preface); err != nil {
		t.Fatal(err)
	}
	f.must(f.fr.WriteSettings(append(settings, http2.Setting{ID: settingDirect, Val: directVersion})...))
	return f
}

func (f *forged) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// headers sends a header block on the stream in one HEADERS frame.
func (f *forged) headers(endStream bool, fields ...hpack.HeaderField) {
	f.t.Helper()
	f.hbuf.Reset()
	for _, hf := range fields {
		f.must(f.henc.WriteField(hf))
	}
	f.must(f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h2Stream, BlockFragment: f.hbuf.Bytes(),
		EndStream: endStream, EndHeaders: true}))
}

// request is a gRPC request's header block for path.
func request(path string) []hpack.HeaderField {
	return []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "ring"},
		{Name: "content-type", Value: grpcContentType}, {Name: "te", Value: "trailers"}}
}

// message sends b as one gRPC message in one DATA frame.
func (f *forged) message(b []byte) {
	f.t.Helper()
	p := make([]byte, grpcPrefixBytes, grpcPrefixBytes+len(b))
	binary.BigEndian.PutUint32(p[1:], uint32(len(b)))
	f.must(f.fr.WriteData(h2Stream, false, append(p, b...)))
}

// until reads frames up to the first that pick takes, and returns it.
func (f *forged) until(what string, pick func(http2.Frame) bool) http2.Frame {
	f.t.Helper()
	for {
		fr, err := f.fr.ReadFrame()
		if err != nil {
			f.t.Fatalf("reading up to %s: %v", what, err)
		}
		if pick(fr) {
			return fr
		}
	}
}

// trailers reads up to the header block that ends the stream and returns it.
func (f *forged) trailers() *http2.MetaHeadersFrame {
	f.t.Helper()
	return f.until("the trailers", func(fr http2.Frame) bool {
		mh, ok := fr.(*http2.MetaHeadersFrame)
		return ok && mh.StreamEnded()
	}).(*http2.MetaHeadersFrame)
}

// helloBytes is the encoded HELLO of rank from of a ring of world ranks, generation gen.
func helloBytes(gen uint64, from, world uint32) []byte {
	f := newOutFrame(&header{kind: api.FrameKind_FRAME_KIND_HELLO, generation: gen, fromRank: from, world: world}, nil, nil)
	defer f.data.Free()
	return f.data.Materialize()
}

// TestDirectS27CloseDuringSetUp: a ring whose successor accepted its direct connection and
// says nothing (a frozen process: the kernel accepts for it) is closed. Close must end the
// set-up at once (the connection closed), not wait out its deadline (directHandshakeTimeout,
// 10 s) as it did: a new generation's NewRing closes the old ring, so the whole cluster waited.
func TestDirectS27CloseDuringSetUp(t *testing.T) {
	nodes := plainNodes(t, []bool{true}, []bool{true})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	r, err := NewRing(nodes[0].ep, Config{Generation: 1, Rank: 0, Peers: []string{nodes[0].addr, lis.Addr().String()},
		Timeout: time.Minute, DialOptions: nodes[0].sec.DialOptions(), Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(s27Wait))
	if _, err := io.ReadFull(nc, make([]byte, len(h2Preface)+len(settingsFrameBytes()))); err != nil {
		t.Fatalf("reading the ring's preface and SETTINGS: %v", err)
	}
	// The ring now waits for this server's SETTINGS.
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(directHandshakeTimeout / 2):
		t.Errorf("Close still waiting %v after it was called (the set-up's deadline is %v)", directHandshakeTimeout/2, directHandshakeTimeout)
		<-closed
	}
	if n, err := io.Copy(io.Discard, nc); err != nil || n != 0 {
		t.Errorf("after its SETTINGS the ring sent %d bytes and then %v; want the end of the connection", n, err)
	}
}

// settingsFrameBytes is what a direct end writes after the preface: SETTINGS (4 settings) and
// the connection's WINDOW_UPDATE.
func settingsFrameBytes() []byte { return make([]byte, h2HeaderLen+4*6+h2HeaderLen+4) }

// TestDirectS27ShutWindowCloseReturns: a direct client (forged) attaches to rank 1 with its
// stream's flow-control window shut (SETTINGS_INITIAL_WINDOW_SIZE 0). Rank 1's AllReduce
// fails with ErrPeerLost and its failure signal cannot be sent. Close must still return: it
// hung for good, the signal's send waiting (holding the ring's inbound lock) for a
// WINDOW_UPDATE that only the stream's handler, waiting for that lock, could have let in. The
// forged client then gets the trailers of a cancelled stream (grpc-status 1).
func TestDirectS27ShutWindowCloseReturns(t *testing.T) {
	nodes := plainNodes(t, []bool{true, true}, []bool{true, true})
	r1, err := NewRing(nodes[1].ep, Config{Generation: 1, Rank: 1, Peers: []string{nodes[0].addr, nodes[1].addr},
		Timeout: 2 * time.Second, DialOptions: nodes[1].sec.DialOptions(), Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	f := forgedClient(t, nodes[1].addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	f.headers(false, request(api.Ring_Stream_FullMethodName)...)
	f.message(helloBytes(1, 0, 2))
	select {
	case <-r1.inReady: // the forged stream is rank 1's inbound: its failure signal goes there
	case <-time.After(s27Wait):
		t.Fatal("the forged stream was not attached")
	}
	if err := r1.AllReduce(context.Background(), make([]float32, 10)); !errors.Is(err, ErrPeerLost) {
		t.Errorf("rank 1: %v, want ErrPeerLost", err)
	}
	closed := make(chan struct{})
	go func() { r1.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(s27Wait):
		t.Fatal("rank 1's Close did not return")
	}
	tr := f.trailers()
	if got := fieldOf(tr, "grpc-status"); got != "1" {
		t.Errorf("grpc-status %q (message %q), want 1 (cancelled)", got, fieldOf(tr, "grpc-message"))
	}
}

// fieldOf returns the value of the field named name in a header block ("" if none).
func fieldOf(mh *http2.MetaHeadersFrame, name string) string {
	for _, hf := range mh.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// TestDirectS27RequestEndsStream: a client whose request ends the stream (END_STREAM on its
// HEADERS: it has no message to send) gets the handler's result, grpc-status 2 (the stream
// ended before a HELLO), as grpc-go's server gives it; the direct server ignored the flag and
// waited for a HELLO for good, holding the connection and its goroutine.
func TestDirectS27RequestEndsStream(t *testing.T) {
	nodes := plainNodes(t, []bool{true}, []bool{true})
	f := forgedClient(t, nodes[0].addr)
	f.headers(true, request(api.Ring_Stream_FullMethodName)...)
	tr := f.trailers()
	if got := fieldOf(tr, "grpc-status"); got != "2" {
		t.Errorf("grpc-status %q (message %q), want 2", got, fieldOf(tr, "grpc-message"))
	}
}

// TestDirectS27UnknownFrameIgnored: an HTTP/2 frame of a type the server does not know is
// ignored whatever its size up to the SETTINGS_MAX_FRAME_SIZE the server advertised (RFC 9113
// 4.1, 5.5); the server dropped the connection on any such frame over 64 KiB. A request for
// another method after it gets its answer: grpc-status 12 (unimplemented).
func TestDirectS27UnknownFrameIgnored(t *testing.T) {
	nodes := plainNodes(t, []bool{true}, []bool{true})
	f := forgedClient(t, nodes[0].addr)
	f.must(f.fr.WriteRawFrame(0xfa, 0, 0, make([]byte, 100<<10)))
	f.headers(false, request("/ddpm.v1.Other/Method")...)
	tr := f.trailers()
	if got := fieldOf(tr, "grpc-status"); got != "12" {
		t.Errorf("grpc-status %q (message %q), want 12", got, fieldOf(tr, "grpc-message"))
	}
}

// TestDirectS27LongTrailers: a header block longer than the peer's SETTINGS_MAX_FRAME_SIZE
// (16 KiB here, the default) is sent as HEADERS and CONTINUATION frames (RFC 9113 4.3, 6.10).
// The trailers of a request for an unknown 40 KB method name quote it; the server sent them
// in one frame over the limit, which the client must reject.
func TestDirectS27LongTrailers(t *testing.T) {
	nodes := plainNodes(t, []bool{true}, []bool{true})
	f := forgedClient(t, nodes[0].addr)
	path := "/" + strings.Repeat("ring.Method0123456789/", 2000)
	f.headers(false, request(path)...)
	tr := f.trailers()
	if got := fieldOf(tr, "grpc-status"); got != "12" {
		t.Errorf("grpc-status %q, want 12", got)
	}
	if msg := fieldOf(tr, "grpc-message"); !strings.Contains(msg, path) {
		t.Errorf("grpc-message of %d bytes does not quote the %d-byte path", len(msg), len(path))
	}
}

// forgedServer accepts one direct client on lis and answers its preface with SETTINGS (the
// given ones and settingDirect), then reads up to the client's request.
func forgedServer(t *testing.T, lis net.Listener, settings ...http2.Setting) *forged {
	t.Helper()
	nc, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	f := newForged(t, nc)
	f.fr.SetMaxReadFrameSize(h2MaxFrame)
	if _, err := io.ReadFull(nc, make([]byte, len(h2Preface))); err != nil {
		t.Fatal(err)
	}
	f.must(f.fr.WriteSettings(append(settings, http2.Setting{ID: settingDirect, Val: directVersion})...))
	f.until("the request", func(fr http2.Frame) bool { _, ok := fr.(*http2.MetaHeadersFrame); return ok })
	return f
}

// dialForged runs dialDirect to lis's forged server and returns the client.
func dialForged(t *testing.T, lis net.Listener, settings ...http2.Setting) (*directClient, *forged) {
	t.Helper()
	type dialed struct {
		dc  *directClient
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		dc, err := dialDirect(context.Background(), lis.Addr().String())
		ch <- dialed{dc, err}
	}()
	f := forgedServer(t, lis, settings...)
	d := <-ch
	if d.err != nil {
		t.Fatal(d.err)
	}
	t.Cleanup(d.dc.close)
	return d.dc, f
}

// TestDirectS27SettingsAgain: a peer that sends SETTINGS_INITIAL_WINDOW_SIZE again (here the
// same 100000) moves the stream's send window by the change from its previous value, which is
// none (RFC 9113 6.9.2). The client counted it from the default 65535 each time, so it sent
// 134465 bytes into a window of 100000: the first DATA frame of a 200000-byte message must be
// 100000 bytes (frame size and connection window are no limit here).
func TestDirectS27SettingsAgain(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	win := http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100000}
	dc, f := dialForged(t, lis, win, http2.Setting{ID: http2.SettingMaxFrameSize, Val: h2MaxFrame})
	f.must(f.fr.WriteWindowUpdate(0, 16<<20))
	f.must(f.fr.WriteSettings(win))
	recvDone := make(chan error, 1)
	go func() { recvDone <- dc.RecvMsg(new(api.Signal)) }() // the client's reader takes both in
	f.until("the client's SETTINGS ACK", func(fr http2.Frame) bool {
		sf, ok := fr.(*http2.SettingsFrame)
		return ok && sf.IsAck()
	})
	sendDone := make(chan error, 1)
	go func() { sendDone <- dc.c.writeMessage([][]byte{make([]byte, 200000)}) }()
	data := f.until("the message", func(fr http2.Frame) bool { _, ok := fr.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if n := len(data.Data()); n != 100000 {
		t.Errorf("first DATA frame of %d bytes, want 100000 (the stream's window)", n)
	}
	dc.close()
	<-sendDone
	<-recvDone
}

// TestDirectS27GracefulGoAway: a GOAWAY whose last stream ID includes the stream (what a
// graceful shutdown sends first: grpc-go's GracefulStop sends 2^31-1) lets the stream finish
// (RFC 9113 6.8): the client still receives the server's message after it. It ended the
// stream with Unavailable.
func TestDirectS27GracefulGoAway(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	dc, f := dialForged(t, lis)
	f.must(f.fr.WriteGoAway(1<<31-1, http2.ErrCodeNo, nil))
	f.hbuf.Reset()
	for _, hf := range responseHeaders {
		f.must(f.henc.WriteField(hf))
	}
	f.must(f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h2Stream, BlockFragment: f.hbuf.Bytes(), EndHeaders: true}))
	b, err := proto.Marshal(&api.Signal{Generation: 7, DoneOp: 3})
	if err != nil {
		t.Fatal(err)
	}
	f.message(b)
	var sig api.Signal
	if err := dc.RecvMsg(&sig); err != nil || sig.DoneOp != 3 {
		t.Errorf("RecvMsg: %v, signal %v; want the acknowledgement of operation 3", err, &sig)
	}
}

// lateProxy forwards connections from lis to addr. On the first it holds the client's bytes
// until the server has spoken first: a DirectListener does that only once it has given up on
// a direct start (classifyFirstByte) and handed the connection to grpc.Server, so the client's
// start arrives late, as from a client starved of CPU.
func lateProxy(t *testing.T, lis net.Listener, addr string) {
	t.Helper()
	done := make(chan struct{})
	t.Cleanup(func() { lis.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		var copies sync.WaitGroup
		defer func() {
			for _, c := range conns {
				c.Close()
			}
			copies.Wait()
		}()
		for first := true; ; first = false {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				return
			}
			conns = append(conns, c, s)
			if first {
				var h [h2HeaderLen]byte
				if _, err := io.ReadFull(s, h[:]); err != nil {
					return
				}
				if _, err := c.Write(h[:]); err != nil {
					return
				}
			}
			copies.Go(func() { io.Copy(s, c); s.Close() })
			copies.Go(func() { io.Copy(c, s); c.Close() })
		}
	}()
}

// TestDirectS27LateFirstByteStaysDirect: rank 0's first direct connection to rank 1 reaches
// rank 1's DirectListener late, so it is handed to grpc.Server (its SETTINGS lack the direct
// setting). The ring must still run direct: dialDirect tries once more before it takes the
// server for one without direct connections. It fell back to grpc-go's transport for the
// ring's life. The sums are exact either way; the counts say which transport ran.
func TestDirectS27LateFirstByteStaysDirect(t *testing.T) {
	nodes := plainNodes(t, []bool{true, true}, []bool{true, true})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lateProxy(t, lis, nodes[1].addr)
	before := countsNow()
	var rings []*Ring
	for rank, peers := range [][]string{{nodes[0].addr, lis.Addr().String()}, {nodes[0].addr, nodes[1].addr}} {
		r, err := NewRing(nodes[rank].ep, Config{Generation: 1, Rank: rank, Peers: peers, Timeout: s27Wait,
			DialOptions: nodes[rank].sec.DialOptions(), Direct: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rings = append(rings, r)
	}
	in := randomBufs(2, 4097, 27)
	out := clone(in)
	for r, err := range allReduce(rings, out) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	checkSum(t, in, out)
	if got := countsNow().since(before); got != (counts{dialed: 2, served: 2}) {
		t.Errorf("connections %+v, want both rings direct (2 dialed, 2 served, none fallen back)", got)
	}
}

// TestDirectS27OverflowingVarint: a Frame whose kind is a varint of more than 64 bits is a
// malformed message, and the rank that receives it fails with ErrMismatch (doc.go; over
// grpc-go the codec's error becomes codes.Internal, which the ring maps so). The direct stream
// passed binary.ReadUvarint's overflow error on as a broken connection: ErrPeerLost.
func TestDirectS27OverflowingVarint(t *testing.T) {
	nodes := plainNodes(t, []bool{true, true}, []bool{true, true})
	r1, err := NewRing(nodes[1].ep, Config{Generation: 1, Rank: 1, Peers: []string{nodes[0].addr, nodes[1].addr},
		Timeout: s27Wait, DialOptions: nodes[1].sec.DialOptions(), Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	f := forgedClient(t, nodes[1].addr)
	f.headers(false, request(api.Ring_Stream_FullMethodName)...)
	f.message(helloBytes(1, 0, 2))
	f.message(append([]byte{fKind << 3}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02))
	if err := r1.AllReduce(context.Background(), make([]float32, 10)); !errors.Is(err, ErrMismatch) {
		t.Errorf("rank 1: %v, want ErrMismatch", err)
	}
}
