package allreduce

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// plainNodes starts n plain-text gRPC servers with the ring service; wrapped[i] puts node i's
// server behind DirectListener, direct[i] makes node i's ring dial direct.
func plainNodes(t *testing.T, wrapped, direct []bool) []*node {
	t.Helper()
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	nodes := make([]*node, len(wrapped))
	for i := range nodes {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(append(sec.ServerOptions(), ServerOptions()...)...)
		nodes[i] = &node{srv: srv, ep: Register(srv, WithAttachTimeout(5*time.Second)), addr: lis.Addr().String(), sec: sec,
			direct: direct[i]}
		if wrapped[i] {
			go srv.Serve(nodes[i].ep.DirectListener(lis))
		} else {
			go srv.Serve(lis)
		}
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.srv.Stop()
		}
	})
	return nodes
}

// sumsOn runs all-reduces of several lengths (the default 1 MiB sub-chunks, and a 4 MiB+12 B
// buffer that splits into many) and checks every rank's bytes against the ring-order sum.
func sumsOn(t *testing.T, nodes []*node) {
	t.Helper()
	rings := buildRings(t, nodes, 1, 20*time.Second, 0)
	world := len(nodes)
	for _, n := range []int{0, 1, 5, 4097, 1<<20 + 3} {
		in := randomBufs(world, n, uint64(7*world+n))
		out := clone(in)
		for r, err := range allReduce(rings, out) {
			if err != nil {
				t.Fatalf("n=%d rank %d: %v", n, r, err)
			}
		}
		checkSum(t, in, out)
	}
}

type counts struct{ dialed, fellBack, served int64 }

func countsNow() counts {
	return counts{directCounts.dialed.Load(), directCounts.fellBack.Load(), directCounts.served.Load()}
}

func (c counts) since(old counts) counts {
	return counts{c.dialed - old.dialed, c.fellBack - old.fellBack, c.served - old.served}
}

// TestDirectInteropWithGRPCGo runs each end of a direct connection against grpc-go's: the
// direct client sending the ring's frames to grpc.Server (which takes 16 KiB frames and
// opens its flow-control windows 16 MiB at a time, so the client must split messages and wait
// for window updates), and grpc-go's client sending to a DirectListener (messages split across
// 16 KiB DATA frames, grpc-go's own settings, pings and window updates). The sums must be
// exact on every rank, and the counters must show that every connection was a direct one at
// the tested end.
func TestDirectInteropWithGRPCGo(t *testing.T) {
	const world = 3
	all := func(v bool) []bool { return []bool{v, v, v} }
	t.Run("direct client, grpc-go server", func(t *testing.T) {
		directCounts.anyServer.Store(true)
		t.Cleanup(func() { directCounts.anyServer.Store(false) })
		before := countsNow()
		sumsOn(t, plainNodes(t, all(false), all(true)))
		if got := countsNow().since(before); got != (counts{dialed: world}) {
			t.Errorf("connections %+v, want %d dialed direct to grpc.Server and none served", got, world)
		}
	})
	t.Run("grpc-go client, direct server", func(t *testing.T) {
		directCounts.anyClient.Store(true)
		t.Cleanup(func() { directCounts.anyClient.Store(false) })
		before := countsNow()
		sumsOn(t, plainNodes(t, all(true), all(false)))
		if got := countsNow().since(before); got != (counts{served: world}) {
			t.Errorf("connections %+v, want %d grpc-go connections served direct", got, world)
		}
	})
}

// TestDirectMixedCluster: ranks of a ring may differ in whether their server is wrapped and
// whether they dial direct (a cluster upgraded one trainer at a time). Rank 0 dials direct a
// wrapped server (direct), rank 1 dials with grpc-go an unwrapped one, rank 2 dials direct an
// unwrapped one (it must fall back to grpc-go), rank 3 dials with grpc-go a wrapped one (the
// listener must pass the connection to grpc.Server unchanged).
func TestDirectMixedCluster(t *testing.T) {
	before := countsNow()
	nodes := plainNodes(t, []bool{true, true, false, false}, []bool{true, false, true, false})
	sumsOn(t, nodes)
	if got := countsNow().since(before); got != (counts{dialed: 1, fellBack: 1, served: 1}) {
		t.Errorf("connections %+v, want 1 direct (rank 0 to 1), 1 fallback (rank 2 to 3)", got)
	}
}

// TestDirectListenerServerSpeaksFirst: a client that waits for the server to speak (as some
// probes do) is handed to grpc.Server after a short wait, and gets its SETTINGS frame.
func TestDirectListenerServerSpeaksFirst(t *testing.T) {
	nodes := plainNodes(t, []bool{true}, []bool{true})
	c, err := net.Dial("tcp", nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [h2HeaderLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("no bytes from the server: %v", err)
	}
	if typ := http2.FrameType(h[3]); typ != http2.FrameSettings {
		t.Errorf("first frame %v, want SETTINGS", typ)
	}
}

// TestDirectMessageLimit: a direct client whose message exceeds the server's receive limit
// (maxRecvFrame) or announces compression makes the receiving rank fail with ErrMismatch, as a
// malformed message, not wait for bytes.
func TestDirectMessageLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix [grpcPrefixBytes]byte
	}{
		{"over the limit", func() (p [grpcPrefixBytes]byte) {
			binary.BigEndian.PutUint32(p[1:], maxRecvFrame+1)
			return
		}()},
		{"compressed", [grpcPrefixBytes]byte{1, 0, 0, 0, 8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := plainNodes(t, []bool{true, true}, []bool{true, true})
			// Only rank 1 builds its ring; a forged rank 0 opens the stream to it.
			r1, err := NewRing(nodes[1].ep, Config{Generation: 1, Rank: 1, Peers: []string{nodes[0].addr, nodes[1].addr},
				Timeout: 5 * time.Second, DialOptions: nodes[1].sec.DialOptions(), Direct: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r1.Close()
			dc, err := dialDirect(t.Context(), nodes[1].addr)
			if err != nil {
				t.Fatal(err)
			}
			defer dc.close()
			hello := newOutFrame(&header{kind: api.FrameKind_FRAME_KIND_HELLO, generation: 1, fromRank: 0, world: 2}, nil, nil)
			if err := dc.SendMsg(hello); err != nil {
				t.Fatal(err)
			}
			dc.c.wmu.Lock()
			err = dc.c.writeFrame(http2.FrameData, 0, h2Stream, tc.prefix[:])
			dc.c.wmu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			errc := make(chan error, 1)
			go func() { errc <- r1.AllReduce(t.Context(), make([]float32, 10)) }()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrMismatch) {
					t.Errorf("rank 1: %v, want ErrMismatch", err)
				}
			case <-time.After(4 * time.Second):
				t.Fatal("rank 1 did not fail on the malformed message")
			}
		})
	}
}

// TestDirectS27LogsTransport: each ring says once, in Config.Log, how its stream to the
// successor runs; a ring with Direct whose successor serves no direct connections warns. In
// the mixed ring of TestDirectMixedCluster: rank 0 direct, ranks 1 and 3 on grpc-go (not
// Direct), rank 2 fell back.
func TestDirectS27LogsTransport(t *testing.T) {
	nodes := plainNodes(t, []bool{true, true, false, false}, []bool{true, false, true, false})
	peers := make([]string, len(nodes))
	for i, nd := range nodes {
		peers[i] = nd.addr
	}
	logs := make([]*testutil.SyncBuffer, len(nodes))
	rings := make([]*Ring, len(nodes))
	for i, nd := range nodes {
		logs[i] = &testutil.SyncBuffer{}
		r, err := NewRing(nd.ep, Config{Generation: 3, Rank: i, Peers: peers, Timeout: time.Minute,
			DialOptions: nd.sec.DialOptions(), Direct: nd.direct, Log: slog.New(slog.NewJSONHandler(logs[i], nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rings[i] = r
	}
	in := randomBufs(len(nodes), 4097, 3)
	out := clone(in)
	for r, err := range allReduce(rings, out) {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	checkSum(t, in, out)
	want := []struct{ level, msg, transport string }{
		{"INFO", MsgRingOpen, "direct"},
		{"INFO", MsgRingOpen, "grpc"},
		{"WARN", MsgRingFellBack, "grpc"},
		{"INFO", MsgRingOpen, "grpc"},
	}
	for i, w := range want {
		var recs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(logs[i].String()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("rank %d: log line %q: %v", i, line, err)
			}
			recs = append(recs, rec)
		}
		if len(recs) != 1 {
			t.Fatalf("rank %d logged %d lines, want 1: %v", i, len(recs), recs)
		}
		r := recs[0]
		if r["level"] != w.level || r["msg"] != w.msg || r["transport"] != w.transport ||
			r["successor"] != peers[(i+1)%len(peers)] || r["generation"] != float64(3) || r["rank"] != float64(i) {
			t.Errorf("rank %d logged %v; want %s %q transport=%s successor=%s generation=3", i, r, w.level, w.msg, w.transport,
				peers[(i+1)%len(peers)])
		}
	}
}

// TestDirectS27SilentStreamDropped: a direct client that opens the ring's stream and never
// sends its HELLO is dropped by the server once the set-up's deadline passes (the connection
// closed, the handler gone), not held until the listener closes.
func TestDirectS27SilentStreamDropped(t *testing.T) {
	old := directHandshakeTimeout
	directHandshakeTimeout = 2 * time.Second
	t.Cleanup(func() { directHandshakeTimeout = old })
	nodes := plainNodes(t, []bool{true}, []bool{true})
	dc, err := dialDirect(t.Context(), nodes[0].addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dc.close()
	start := time.Now()
	dc.c.nc.SetReadDeadline(time.Now().Add(time.Minute)) // bounds a hang only
	_, err = io.Copy(io.Discard, dc.c.br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the silent stream after %v", time.Since(start))
	}
	t.Logf("dropped after %v (%v)", time.Since(start), err)
}

// TestS27OversizeMessageMismatchOnGRPC: a message over the server's receive limit
// (maxRecvFrame) is a malformed message, ErrMismatch, on grpc-go's transport as on a direct
// connection (TestDirectMessageLimit); grpc-go reports it as ResourceExhausted, which the ring
// took for a lost peer (ErrPeerLost).
func TestS27OversizeMessageMismatchOnGRPC(t *testing.T) {
	nodes := plainNodes(t, []bool{false, false}, []bool{false, false})
	r1, err := NewRing(nodes[1].ep, Config{Generation: 1, Rank: 1, Peers: []string{nodes[0].addr, nodes[1].addr},
		Timeout: time.Minute, DialOptions: nodes[1].sec.DialOptions()})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	// A forged rank 0 opens the stream to rank 1 with grpc-go and sends HELLO, BEGIN, then a
	// DATA frame whose payload alone exceeds the limit.
	cc, err := grpc.NewClient(nodes[1].addr, nodes[1].sec.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	s, err := cc.NewStream(t.Context(), &api.Ring_ServiceDesc.Streams[0], api.Ring_Stream_FullMethodName,
		grpc.CallContentSubtype(codecName), grpc.MaxCallSendMsgSize(2*maxRecvFrame))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []*outFrame{
		newOutFrame(&header{kind: api.FrameKind_FRAME_KIND_HELLO, generation: 1, fromRank: 0, world: 2}, nil, nil),
		newOutFrame(&header{kind: api.FrameKind_FRAME_KIND_BEGIN, generation: 1, op: 1, length: 10}, nil, nil),
		newOutFrame(&header{kind: api.FrameKind_FRAME_KIND_DATA, generation: 1, op: 1, length: 10}, make([]float32, maxRecvFrame/4+1), nil),
	} {
		if err := s.SendMsg(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := r1.AllReduce(t.Context(), make([]float32, 10)); !errors.Is(err, ErrMismatch) {
		t.Errorf("rank 1: %v, want ErrMismatch", err)
	}
}

// TestS27ReplayConnReachesTCP: a connection DirectListener hands to grpc.Server still offers
// the TCP connection's SyscallConn (socket options) and CloseWrite (the peer reads EOF).
func TestS27ReplayConnReachesTCP(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn = &replayConn{Conn: server}
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatal("replayConn has no SyscallConn")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := raw.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Fatalf("Control: fd %d, %v", fd, err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	client.SetReadDeadline(time.Now().Add(time.Minute)) // bounds a hang only
	if n, err := client.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("peer read %d bytes, %v after CloseWrite; want EOF", n, err)
	}
}
