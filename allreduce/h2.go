package allreduce

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// This file is the HTTP/2 layer of the ring's direct connections (see direct.go): the frames of
// RFC 9113 that a gRPC bidirectional stream uses (SETTINGS, HEADERS, CONTINUATION, DATA,
// WINDOW_UPDATE, PING, RST_STREAM, GOAWAY), one stream per connection, with flow control
// kept in both directions. Header blocks are coded with x/net's hpack; everything else is a
// 9-byte frame header and its payload, written with one writev straight from the caller's
// memory. Payloads are read from the socket into a staging buffer (direct.go's recvFrame) and
// summed or copied from there into the destination.

// HTTP/2 constants of the direct connections.
const (
	h2Preface   = http2.ClientPreface
	h2HeaderLen = 9
	// h2MaxFrame is the SETTINGS_MAX_FRAME_SIZE a direct endpoint advertises: the protocol's
	// largest, so a sub-chunk of the ring (at most MaxChunkBytes) travels in one DATA frame.
	h2MaxFrame = 1<<24 - 1
	// h2MaxWindow is the largest flow-control window (2^31-1). Both ends advertise it for the
	// stream and the connection and give bytes back every h2WindowRefill consumed: the ring's
	// own acknowledgements bound what is in flight.
	h2MaxWindow    = 1<<31 - 1
	h2WindowRefill = 64 << 20
	// h2DefaultWindow is the initial window of every connection and stream (RFC 9113 6.9.2).
	h2DefaultWindow = 65535
	// h2MaxControl bounds the payload of a frame other than DATA (a header block, settings).
	h2MaxControl = 64 << 10
	// h2Stream is the one stream of a direct connection (client-initiated, odd).
	h2Stream = 1
	// settingDirect is a private SETTINGS identifier (RFC 9113 6.5.2: receivers ignore
	// identifiers they do not know) by which a direct client and a direct listener recognise
	// each other; its value is the direct protocol's version.
	settingDirect   http2.SettingID = 0xdd01
	directVersion                   = 1
	grpcContentType                 = "application/grpc+" + codecName
)

// h2conn is one HTTP/2 connection carrying a single gRPC stream. Writes are serialized by wmu;
// reads belong to one goroutine at a time (the stream's receiver).
type h2conn struct {
	nc net.Conn
	br *bufio.Reader

	dmu  sync.Mutex        // serializes messages: a message's DATA frames are not interleaved
	wmu  sync.Mutex        // serializes frames
	hdr  [h2HeaderLen]byte // a frame header, under wmu
	henc *hpack.Encoder
	hbuf bytes.Buffer

	// Send-side flow control: what the peer allows us to send.
	fmu       sync.Mutex
	fcond     *sync.Cond
	connWin   int64
	streamWin int64
	maxFrame  int   // the peer's SETTINGS_MAX_FRAME_SIZE
	peerInit  int64 // the peer's SETTINGS_INITIAL_WINDOW_SIZE, which streamWin started from
	broken    error // set once the connection failed: sends stop waiting for window
	// noWait makes a message that the windows cannot take at once fail instead of waiting
	// (errWindowShut): set on a server's connection, whose one reader may be the sender.
	noWait bool

	// Receive side, used by the reading goroutine only.
	hdec    *hpack.Decoder
	unacked int    // DATA bytes consumed and not yet given back by WINDOW_UPDATE
	ctl     []byte // payload of the control frame being read
	peerDir uint32 // the peer's settingDirect value (0: not a direct endpoint)
}

// h2ReadBuffer sizes the connection's read buffer: frame headers and small messages are read
// through it; a payload read of at least this size goes straight from the socket.
const h2ReadBuffer = 64 << 10

func newH2Conn(nc net.Conn, br *bufio.Reader) *h2conn {
	if br == nil {
		br = bufio.NewReaderSize(nc, h2ReadBuffer)
	}
	c := &h2conn{nc: nc, br: br, connWin: h2DefaultWindow, streamWin: h2DefaultWindow, maxFrame: 16384,
		peerInit: h2DefaultWindow, hdec: hpack.NewDecoder(4096, nil)}
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fcond = sync.NewCond(&c.fmu)
	return c
}

// frameHeader is a decoded HTTP/2 frame header.
type frameHeader struct {
	length int
	typ    http2.FrameType
	flags  http2.Flags
	stream uint32
}

func putFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, stream uint32) {
	b[0], b[1], b[2] = byte(length>>16), byte(length>>8), byte(length)
	b[3], b[4] = byte(typ), byte(flags)
	binary.BigEndian.PutUint32(b[5:9], stream&(1<<31-1))
}

func (c *h2conn) readFrameHeader() (frameHeader, error) {
	var b [h2HeaderLen]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		return frameHeader{}, err
	}
	return frameHeader{length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]), typ: http2.FrameType(b[3]),
		flags: http2.Flags(b[4]), stream: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1)}, nil
}

// writeFrame writes one frame whose payload is the concatenation of parts, with one writev.
// The caller holds wmu.
func (c *h2conn) writeFrame(typ http2.FrameType, flags http2.Flags, stream uint32, parts ...[]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	putFrameHeader(c.hdr[:], n, typ, flags, stream)
	bufs := make(net.Buffers, 0, 1+len(parts))
	bufs = append(bufs, c.hdr[:h2HeaderLen])
	for _, p := range parts {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	_, err := bufs.WriteTo(c.nc)
	return err
}

// writeSettings sends this endpoint's SETTINGS and opens the connection's window.
func (c *h2conn) writeSettings() error {
	var p []byte
	for _, s := range []http2.Setting{
		{ID: http2.SettingEnablePush, Val: 0},
		{ID: http2.SettingInitialWindowSize, Val: h2MaxWindow},
		{ID: http2.SettingMaxFrameSize, Val: h2MaxFrame},
		{ID: settingDirect, Val: directVersion},
	} {
		p = binary.BigEndian.AppendUint16(p, uint16(s.ID))
		p = binary.BigEndian.AppendUint32(p, s.Val)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeFrame(http2.FrameSettings, 0, 0, p); err != nil {
		return err
	}
	return c.writeWindowUpdate(0, h2MaxWindow-h2DefaultWindow)
}

// writeWindowUpdate gives n bytes of window back to the peer. The caller holds wmu.
func (c *h2conn) writeWindowUpdate(stream uint32, n int) error {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(n))
	return c.writeFrame(http2.FrameWindowUpdate, 0, stream, p[:])
}

// writeHeaders sends a header block, after any message being sent: one HEADERS frame, and
// CONTINUATION frames for what exceeds the peer's SETTINGS_MAX_FRAME_SIZE (RFC 9113 4.3; a
// trailer's grpc-message can be long).
func (c *h2conn) writeHeaders(endStream bool, fields ...hpack.HeaderField) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.fmu.Lock()
	maxFrame := c.maxFrame
	c.fmu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	typ, flags := http2.FrameHeaders, http2.Flags(0)
	if endStream {
		flags = http2.FlagHeadersEndStream
	}
	for {
		k := min(len(block), maxFrame)
		if k == len(block) {
			flags |= http2.FlagHeadersEndHeaders // the same bit as CONTINUATION's END_HEADERS
		}
		if err := c.writeFrame(typ, flags, h2Stream, block[:k]); err != nil {
			return err
		}
		if block = block[k:]; len(block) == 0 {
			return nil
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// fail marks the connection broken: senders waiting for window stop with err.
func (c *h2conn) fail(err error) {
	c.fmu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.fmu.Unlock()
	c.fcond.Broadcast()
}

// errWindowShut: a noWait connection's peer has not opened its windows for a message.
var errWindowShut = errors.New("the peer's flow-control window is shut")

// reserve waits until the peer's windows allow sending and takes up to n bytes of them.
func (c *h2conn) reserve(n int) (int, error) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	for c.broken == nil && (c.connWin <= 0 || c.streamWin <= 0) {
		if c.noWait {
			return 0, errWindowShut
		}
		c.fcond.Wait()
	}
	if c.broken != nil {
		return 0, c.broken
	}
	k := int64(min(n, c.maxFrame))
	k = min(k, c.connWin, c.streamWin)
	c.connWin -= k
	c.streamWin -= k
	return int(k), nil
}

// writeMessage sends one gRPC message (the 5-byte length prefix, then parts) as DATA frames
// on the stream, from the parts' memory in place: one frame when the peer's frame size and
// windows allow, else as many as they require.
func (c *h2conn) writeMessage(parts [][]byte) error {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	var prefix [grpcPrefixBytes]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(n))
	rest := append(make([][]byte, 0, 1+len(parts)), prefix[:])
	rest = append(rest, parts...)
	left := n + grpcPrefixBytes
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.noWait {
		c.fmu.Lock()
		shut := int64(left) > min(c.connWin, c.streamWin)
		c.fmu.Unlock()
		if shut {
			return fmt.Errorf("%w: %d bytes to send", errWindowShut, left)
		}
	}
	for left > 0 {
		k, err := c.reserve(left)
		if err != nil {
			return err
		}
		var frame [][]byte
		for want := k; want > 0; {
			p := rest[0]
			if len(p) > want {
				frame = append(frame, p[:want])
				rest[0] = p[want:]
				break
			}
			frame = append(frame, p)
			want -= len(p)
			rest = rest[1:]
		}
		c.wmu.Lock()
		err = c.writeFrame(http2.FrameData, 0, h2Stream, frame...)
		c.wmu.Unlock()
		if err != nil {
			return err
		}
		left -= k
	}
	return nil
}

// control handles a frame other than DATA and HEADERS/CONTINUATION: settings, pings and
// window updates are answered or applied; RST_STREAM ends the stream with an error, and so
// does a GOAWAY that excludes the stream (a GOAWAY whose last stream ID covers it, as a
// graceful shutdown sends first, lets the stream finish: RFC 9113 6.8).
func (c *h2conn) control(fh frameHeader) error {
	switch fh.typ {
	case http2.FrameSettings, http2.FramePing, http2.FrameWindowUpdate, http2.FrameRSTStream, http2.FrameGoAway:
	default:
		// PRIORITY and frame types this end does not know are ignored (RFC 9113 4.1, 5.5),
		// up to the SETTINGS_MAX_FRAME_SIZE this end advertised.
		_, err := c.br.Discard(fh.length)
		return err
	}
	if fh.length > h2MaxControl {
		return fmt.Errorf("%v frame of %d bytes", fh.typ, fh.length)
	}
	c.ctl = append(c.ctl[:0], make([]byte, fh.length)...)
	if _, err := io.ReadFull(c.br, c.ctl); err != nil {
		return err
	}
	p := c.ctl
	switch fh.typ {
	case http2.FrameSettings:
		if fh.flags.Has(http2.FlagSettingsAck) {
			return nil
		}
		if len(p)%6 != 0 || fh.stream != 0 {
			return errors.New("malformed SETTINGS frame")
		}
		c.fmu.Lock()
		for ; len(p) > 0; p = p[6:] {
			id, v := http2.SettingID(binary.BigEndian.Uint16(p)), binary.BigEndian.Uint32(p[2:])
			switch id {
			case http2.SettingInitialWindowSize:
				if v > h2MaxWindow {
					c.fmu.Unlock()
					return fmt.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d", v)
				}
				// RFC 9113 6.9.2: the stream's window moves by the change of the setting
				// (a peer may send it again), from the default it opened at.
				c.streamWin += int64(v) - c.peerInit
				c.peerInit = int64(v)
			case http2.SettingMaxFrameSize:
				if v < 16384 || v > h2MaxFrame {
					c.fmu.Unlock()
					return fmt.Errorf("SETTINGS_MAX_FRAME_SIZE %d", v)
				}
				c.maxFrame = int(v)
			case settingDirect:
				c.peerDir = v
			}
		}
		c.fmu.Unlock()
		c.fcond.Broadcast()
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.writeFrame(http2.FrameSettings, http2.FlagSettingsAck, 0)
	case http2.FramePing:
		if len(p) != 8 {
			return errors.New("malformed PING frame")
		}
		if fh.flags.Has(http2.FlagPingAck) {
			return nil
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.writeFrame(http2.FramePing, http2.FlagPingAck, 0, p)
	case http2.FrameWindowUpdate:
		if len(p) != 4 {
			return errors.New("malformed WINDOW_UPDATE frame")
		}
		inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
		c.fmu.Lock()
		if fh.stream == 0 {
			c.connWin += inc
		} else if fh.stream == h2Stream {
			c.streamWin += inc
		}
		c.fmu.Unlock()
		c.fcond.Broadcast()
		return nil
	case http2.FrameRSTStream:
		if len(p) != 4 {
			return errors.New("malformed RST_STREAM frame")
		}
		return status.Errorf(codes.Unavailable, "stream reset by peer (%v)", http2.ErrCode(binary.BigEndian.Uint32(p)))
	case http2.FrameGoAway:
		if len(p) < 8 {
			return errors.New("malformed GOAWAY frame")
		}
		if binary.BigEndian.Uint32(p)&(1<<31-1) >= h2Stream {
			return nil // the stream goes on; the peer closes the connection after it
		}
		return status.Errorf(codes.Unavailable, "peer closed the connection (GOAWAY %v %q)",
			http2.ErrCode(binary.BigEndian.Uint32(p[4:])), p[8:])
	}
	return nil
}

// readHeaderBlock reads the rest of a header block that started with HEADERS frame fh (its
// CONTINUATION frames) and decodes it.
func (c *h2conn) readHeaderBlock(fh frameHeader) ([]hpack.HeaderField, error) {
	var block []byte
	for {
		if fh.length > h2MaxControl || len(block)+fh.length > h2MaxControl {
			return nil, errors.New("header block too large")
		}
		start := len(block)
		block = append(block, make([]byte, fh.length)...)
		if _, err := io.ReadFull(c.br, block[start:]); err != nil {
			return nil, err
		}
		if fh.typ == http2.FrameHeaders {
			p := block[start:]
			if fh.flags.Has(http2.FlagHeadersPadded) {
				if len(p) < 1 || int(p[0]) >= len(p) {
					return nil, errors.New("malformed HEADERS padding")
				}
				p = p[1 : len(p)-int(p[0])]
			}
			if fh.flags.Has(http2.FlagHeadersPriority) {
				if len(p) < 5 {
					return nil, errors.New("malformed HEADERS priority")
				}
				p = p[5:]
			}
			block = append(block[:start], p...)
		}
		if fh.flags.Has(http2.FlagHeadersEndHeaders) {
			break
		}
		var err error
		if fh, err = c.readFrameHeader(); err != nil {
			return nil, err
		}
		if fh.typ != http2.FrameContinuation || fh.stream != h2Stream {
			return nil, fmt.Errorf("%v frame inside a header block", fh.typ)
		}
	}
	return c.hdec.DecodeFull(block)
}

// consumed counts n DATA bytes read, giving them back to the peer in large updates.
func (c *h2conn) consumed(n int) error {
	c.unacked += n
	if c.unacked < h2WindowRefill {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, c.unacked = c.unacked, 0
	if err := c.writeWindowUpdate(0, n); err != nil {
		return err
	}
	return c.writeWindowUpdate(h2Stream, n)
}

// streamIn reads the stream's DATA bytes across frames, handling the frames in between.
type streamIn struct {
	c    *h2conn
	left int  // payload bytes left in the current DATA frame
	pad  int  // padding after them
	end  bool // the current DATA frame ends the stream
	err  error
	// headers handles a header block arriving on the stream (endStream: trailers); a non-nil
	// error ends the stream with it (io.EOF for a clean end).
	headers func(fields []hpack.HeaderField, endStream bool) error
	msg     int // bytes left of the current gRPC message
}

// fill makes left > 0, reading frames until DATA bytes arrive; it returns the stream's end.
func (s *streamIn) fill() error {
	for s.left == 0 {
		if s.err != nil {
			return s.err
		}
		if s.pad > 0 {
			if _, err := s.c.br.Discard(s.pad); err != nil {
				return s.setErr(err)
			}
			if err := s.c.consumed(s.pad); err != nil {
				return s.setErr(err)
			}
			s.pad = 0
		}
		if s.end {
			return s.setErr(io.EOF)
		}
		fh, err := s.c.readFrameHeader()
		if err != nil {
			return s.setErr(err)
		}
		switch fh.typ {
		case http2.FrameData:
			if fh.stream != h2Stream {
				return s.setErr(fmt.Errorf("DATA on stream %d", fh.stream))
			}
			n := fh.length
			if fh.flags.Has(http2.FlagDataPadded) {
				b, err := s.c.br.ReadByte()
				if err != nil {
					return s.setErr(err)
				}
				if int(b) >= n {
					return s.setErr(errors.New("malformed DATA padding"))
				}
				s.pad = int(b)
				n -= 1 + int(b)
				if err := s.c.consumed(1); err != nil {
					return s.setErr(err)
				}
			}
			s.left, s.end = n, fh.flags.Has(http2.FlagDataEndStream)
		case http2.FrameHeaders:
			fields, err := s.c.readHeaderBlock(fh)
			if err != nil {
				return s.setErr(err)
			}
			if err := s.headers(fields, fh.flags.Has(http2.FlagHeadersEndStream)); err != nil {
				return s.setErr(err)
			}
		case http2.FrameContinuation:
			return s.setErr(errors.New("CONTINUATION outside a header block"))
		default:
			if err := s.c.control(fh); err != nil {
				return s.setErr(err)
			}
		}
	}
	return nil
}

func (s *streamIn) setErr(err error) error {
	if s.err == nil {
		s.err = err
	}
	return s.err
}

// read reads up to len(p) bytes of the stream's data.
func (s *streamIn) read(p []byte) (int, error) {
	if err := s.fill(); err != nil {
		return 0, err
	}
	n, err := s.c.br.Read(p[:min(len(p), s.left)])
	s.left -= n
	if err != nil {
		return n, s.setErr(err)
	}
	return n, s.c.consumed(n)
}

// readFull reads len(p) bytes of the current message.
func (s *streamIn) readFull(p []byte) error {
	if len(p) > s.msg {
		return fmt.Errorf("%w: read past the message's end", errMalformed)
	}
	s.msg -= len(p)
	for len(p) > 0 {
		n, err := s.read(p)
		if err != nil {
			return midMessage(err)
		}
		p = p[n:]
	}
	return nil
}

// connError is a failure of the connection under a message (it ended, broke, or broke the
// protocol), as opposed to a message whose content is malformed.
type connError struct{ err error }

func (e *connError) Error() string { return e.err.Error() }
func (e *connError) Unwrap() error { return e.err }

// midMessage wraps a failure met inside a message; the stream's end there is unexpected.
func midMessage(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &connError{err}
}

// beginMsg reads a gRPC message's length prefix; the message (at most limit bytes) is then
// read through ReadByte, Discard and readFull. A clean end of stream before it is io.EOF.
func (s *streamIn) beginMsg(limit int) (int, error) {
	var p [grpcPrefixBytes]byte
	s.msg = grpcPrefixBytes
	if err := s.fill(); err != nil {
		return 0, err
	}
	if err := s.readFull(p[:]); err != nil {
		return 0, err
	}
	if p[0] != 0 {
		return 0, fmt.Errorf("%w: compressed message (flag %d); the ring does not compress", errMalformed, p[0])
	}
	n := int(binary.BigEndian.Uint32(p[1:]))
	if n > limit {
		return 0, fmt.Errorf("%w: message of %d bytes, over the limit of %d", errMalformed, n, limit)
	}
	s.msg = n
	return n, nil
}

// ReadByte, Remaining and Discard read the current message (fieldReader).
func (s *streamIn) ReadByte() (byte, error) {
	var b [1]byte
	if s.msg == 0 {
		return 0, io.EOF
	}
	err := s.readFull(b[:])
	return b[0], err
}

func (s *streamIn) Remaining() int { return s.msg }

func (s *streamIn) Discard(n int) (int, error) {
	var buf [512]byte
	done := 0
	for done < n {
		k := min(n-done, len(buf))
		if err := s.readFull(buf[:k]); err != nil {
			return done, err
		}
		done += k
	}
	return done, nil
}

// headerValue returns the value of the first field named name.
func headerValue(fields []hpack.HeaderField, name string) (string, bool) {
	for _, f := range fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// trailerStatus decodes a gRPC status from trailers (gRPC's PROTOCOL-HTTP2: grpc-status and
// a percent-encoded grpc-message); OK is io.EOF, the stream's clean end.
func trailerStatus(fields []hpack.HeaderField) error {
	v, ok := headerValue(fields, "grpc-status")
	if !ok {
		if hs, _ := headerValue(fields, ":status"); hs != "" && hs != "200" {
			return status.Errorf(codes.Unavailable, "HTTP status %s", hs)
		}
		return status.Error(codes.Internal, "stream ended without grpc-status")
	}
	code, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return status.Errorf(codes.Internal, "malformed grpc-status %q", v)
	}
	if codes.Code(code) == codes.OK {
		return io.EOF
	}
	msg, _ := headerValue(fields, "grpc-message")
	return status.Error(codes.Code(code), percentDecode(msg))
}

// percentEncode encodes a grpc-message: bytes outside printable ASCII, and '%', as %XX.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func percentDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}
