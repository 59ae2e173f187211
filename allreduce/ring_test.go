package allreduce

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"ddpm/internal/rng"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is one process of a test cluster: a real gRPC server on loopback with the ring service.
type node struct {
	srv    *grpc.Server
	ep     *Endpoint
	addr   string
	sec    *tlsauth.Bundle // mutual TLS (one certificate directory per cluster), or plain text
	certs  string          // that directory ("" for plain text)
	direct bool            // the server is wrapped by DirectListener and rings dial direct
}

// transport is how a test cluster's rings connect: grpc-go with mutual TLS (what trainers with
// certificates run), or direct connections on plain text (what --insecure trainers and the
// benchmark run).
type transport string

const (
	grpcTLS     transport = "grpc-tls"
	directPlain transport = "direct"
)

// eachTransport runs f as a subtest per transport.
func eachTransport(t *testing.T, f func(t *testing.T, tr transport)) {
	for _, tr := range []transport{grpcTLS, directPlain} {
		t.Run(string(tr), func(t *testing.T) { f(t, tr) })
	}
}

func startNodes(t *testing.T, n int) []*node { return startNodesTB(t, n) }

func startNodesTB(t testing.TB, n int) []*node { return startNodesOn(t, grpcTLS, n) }

func startNodesOn(t testing.TB, tr transport, n int) []*node {
	t.Helper()
	nodes := make([]*node, n)
	var certs string
	var sec *tlsauth.Bundle
	if tr == directPlain {
		var err error
		if sec, err = tlsauth.Load(tlsauth.Config{Insecure: true}); err != nil {
			t.Fatal(err)
		}
	} else {
		certs = tlsauthtest.Dir(t)
		sec = tlsauthtest.Load(t, certs, nil)
	}
	for i := range nodes {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := grpc.NewServer(append(sec.ServerOptions(), ServerOptions()...)...)
		nd := &node{srv: srv, ep: Register(srv, WithAttachTimeout(5*time.Second)), addr: lis.Addr().String(), sec: sec, certs: certs,
			direct: tr == directPlain}
		if nd.direct {
			go srv.Serve(nd.ep.DirectListener(lis))
		} else {
			go srv.Serve(lis)
		}
		nodes[i] = nd
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.srv.Stop()
		}
	})
	return nodes
}

// buildRings builds generation gen over the given nodes (ring order = slice order).
func buildRings(t *testing.T, nodes []*node, gen uint64, timeout time.Duration, chunkBytes int) []*Ring {
	t.Helper()
	peers := make([]string, len(nodes))
	for i, nd := range nodes {
		peers[i] = nd.addr
	}
	rings := make([]*Ring, len(nodes))
	for i, nd := range nodes {
		r, err := NewRing(nd.ep, Config{Generation: gen, Rank: i, Peers: peers, Timeout: timeout, ChunkBytes: chunkBytes,
			DialOptions: nd.sec.DialOptions(), Direct: nd.direct})
		if err != nil {
			t.Fatalf("NewRing rank %d: %v", i, err)
		}
		rings[i] = r
	}
	t.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
	})
	return rings
}

// allReduce runs AllReduce on every ring concurrently and returns each rank's error.
func allReduce(rings []*Ring, bufs [][]float32) []error {
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() { errs[i] = r.AllReduce(context.Background(), bufs[i]) })
	}
	wg.Wait()
	return errs
}

// randomBufs returns world buffers of n values in [-1, 1) from the project's counter-based RNG.
func randomBufs(world, n int, seed uint64) [][]float32 {
	bufs := make([][]float32, world)
	for r := range bufs {
		g := rng.New(seed, uint64(r))
		bufs[r] = make([]float32, n)
		for i := range bufs[r] {
			bufs[r][i] = 2*g.Float32() - 1
		}
	}
	return bufs
}

// ringOrderSum is the result the ring must produce bit for bit: segment j is accumulated in
// float32 starting at rank j and adding ranks j+1, ..., j-1 (mod world) in turn.
func ringOrderSum(in [][]float32) []float32 {
	world, n := len(in), len(in[0])
	out := make([]float32, n)
	for j, sg := range Plan(world, 0, n).Segments {
		for i := sg.Off; i < sg.Off+sg.Len; i++ {
			acc := in[j][i]
			for k := 1; k < world; k++ {
				acc += in[(j+k)%world][i]
			}
			out[i] = acc
		}
	}
	return out
}

func checkSum(t *testing.T, in, out [][]float32) {
	t.Helper()
	world := len(in)
	want := ringOrderSum(in)
	// float32 sum of world terms of magnitude <= 1: error <= (world-1) * 2^-24 * sum|x|.
	tol := float64(world) * math.Pow(2, -24) * float64(world)
	for i := range want {
		var exact float64
		for r := range in {
			exact += float64(in[r][i])
		}
		if d := math.Abs(float64(out[0][i]) - exact); d > tol {
			t.Fatalf("element %d: got %v, float64 sum %v (|diff| %g > %g)", i, out[0][i], exact, d, tol)
		}
	}
	for r := range out {
		for i := range want {
			if math.Float32bits(out[r][i]) != math.Float32bits(want[i]) {
				t.Fatalf("rank %d element %d: %v (%#x), want ring-order sum %v (%#x)", r, i,
					out[r][i], math.Float32bits(out[r][i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
}

func clone(b [][]float32) [][]float32 {
	c := make([][]float32, len(b))
	for i := range b {
		c[i] = append([]float32(nil), b[i]...)
	}
	return c
}

// TestAllReduceSums runs the ring on real gRPC servers on loopback for world 1..8 and lengths
// shorter than, equal to and longer than the world, with 64-byte chunks so that segments split
// into many pipelined frames; each rank's result must equal the float64 sum within tolerance
// and every rank's bytes must equal the fixed ring-order float32 sum. The same ring runs all
// lengths in turn, so operation sequencing is exercised too.
func TestAllReduceSums(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		for world := 1; world <= 8; world++ {
			t.Run(fmt.Sprintf("world%d", world), func(t *testing.T) {
				rings := buildRings(t, startNodesOn(t, tr, world), 1, 10*time.Second, 64)
				for _, n := range []int{0, 1, 3, 5, 7, 4097} {
					in := randomBufs(world, n, uint64(1000*world+n))
					out := clone(in)
					for r, err := range allReduce(rings, out) {
						if err != nil {
							t.Fatalf("n=%d rank %d: %v", n, r, err)
						}
					}
					checkSum(t, in, out)
				}
			})
		}
	})
}

// TestAllReduceLarge runs 1<<20+3 elements (4 MiB, not a multiple of the world or the chunk) at
// the default chunk size, for world 1..8 (TestAllReduceSums has the shorter lengths).
func TestAllReduceLarge(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		n := 1<<20 + 3
		for world := 1; world <= 8; world++ {
			t.Run(fmt.Sprintf("world%d", world), func(t *testing.T) {
				rings := buildRings(t, startNodesOn(t, tr, world), 7, 20*time.Second, 0)
				in := randomBufs(world, n, uint64(world))
				out := clone(in)
				for r, err := range allReduce(rings, out) {
					if err != nil {
						t.Fatalf("rank %d: %v", r, err)
					}
				}
				checkSum(t, in, out)
			})
		}
	})
}

// TestLengthMismatch: one rank's buffer is shorter; every rank must fail with ErrMismatch,
// promptly (well before the timeout).
func TestLengthMismatch(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		rings := buildRings(t, startNodesOn(t, tr, 3), 1, 10*time.Second, 8)
		bufs := [][]float32{make([]float32, 7), make([]float32, 5), make([]float32, 7)}
		start := time.Now()
		errs := allReduce(rings, bufs)
		for r, err := range errs {
			if !errors.Is(err, ErrMismatch) {
				t.Errorf("rank %d: got %v, want ErrMismatch", r, err)
			}
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("mismatch took %v to surface", d)
		}
		// The ring stays broken with the same error.
		if err := rings[0].AllReduce(context.Background(), bufs[0]); !errors.Is(err, ErrMismatch) {
			t.Errorf("after failure: %v, want ErrMismatch", err)
		}
	})
}

// TestPeerLost: generation 1 has four ranks. Rank 2 never joins the operation and is then
// killed (its server stopped, its connections cut) while the others are mid-operation: all the
// others must fail with ErrPeerLost well within the timeout. Generation 2, built on the same
// endpoints without rank 2, must then succeed.
func TestPeerLost(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		nodes := startNodesOn(t, tr, 4)
		timeout := 10 * time.Second
		rings := buildRings(t, nodes, 1, timeout, 4096)
		n := 100_000
		// One full operation first, so every stream is up: the kill then lands mid-training.
		for r, err := range allReduce(rings, randomBufs(4, n, 5)) {
			if err != nil {
				t.Fatalf("warm-up rank %d: %v", r, err)
			}
		}
		live := []int{0, 1, 3}
		errs := make([]error, 4)
		var wg sync.WaitGroup
		start := time.Now()
		for _, r := range live {
			buf := make([]float32, n)
			wg.Go(func() { errs[r] = rings[r].AllReduce(context.Background(), buf) })
		}
		time.Sleep(200 * time.Millisecond)
		killed := time.Now()
		nodes[2].srv.Stop()
		rings[2].Close()
		wg.Wait()
		for _, r := range live {
			if !errors.Is(errs[r], ErrPeerLost) {
				t.Errorf("rank %d: got %v, want ErrPeerLost", r, errs[r])
			}
			t.Logf("rank %d: %v", r, errs[r])
		}
		if d := time.Since(killed); d > 2*time.Second {
			t.Errorf("ranks took %v after the kill to fail (timeout %v)", d, timeout)
		}
		t.Logf("failed %v after the kill (%v after the start)", time.Since(killed), time.Since(start))

		survivors := []*node{nodes[0], nodes[1], nodes[3]}
		rings2 := buildRings(t, survivors, 2, timeout, 0)
		in := randomBufs(3, 4097, 99)
		out := clone(in)
		for r, err := range allReduce(rings2, out) {
			if err != nil {
				t.Fatalf("generation 2 rank %d: %v", r, err)
			}
		}
		checkSum(t, in, out)
		// The old generation's rings were closed by the new ones.
		if err := rings[0].AllReduce(context.Background(), make([]float32, n)); err == nil {
			t.Error("generation 1 ring still works after generation 2 was built")
		}
	})
}

// TestStall: a rank that is alive but never joins makes the others fail with ErrPeerLost
// within their Timeout.
func TestStall(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		timeout := 300 * time.Millisecond
		rings := buildRings(t, startNodesOn(t, tr, 3), 1, timeout, 0)
		errs := make([]error, 3)
		var wg sync.WaitGroup
		start := time.Now()
		for _, r := range []int{0, 2} {
			wg.Go(func() { errs[r] = rings[r].AllReduce(context.Background(), make([]float32, 1000)) })
		}
		wg.Wait()
		if d := time.Since(start); d > timeout+time.Second {
			t.Errorf("took %v, timeout %v", d, timeout)
		}
		for _, r := range []int{0, 2} {
			if !errors.Is(errs[r], ErrPeerLost) {
				t.Errorf("rank %d: got %v, want ErrPeerLost", r, errs[r])
			}
		}
	})
}

// TestStaleGeneration: a newer ring on an endpoint fails the older one's call with
// ErrStaleGeneration, and a peer still on the old generation is refused.
func TestStaleGeneration(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		nodes := startNodesOn(t, tr, 2)
		old := buildRings(t, nodes, 1, 5*time.Second, 0)
		errc := make(chan error, 1)
		go func() { errc <- old[0].AllReduce(context.Background(), make([]float32, 10)) }()
		time.Sleep(50 * time.Millisecond)
		peers := []string{nodes[0].addr, nodes[1].addr}
		r2, err := NewRing(nodes[0].ep, Config{Generation: 2, Rank: 0, Peers: peers, Timeout: 5 * time.Second,
			DialOptions: nodes[0].sec.DialOptions(), Direct: nodes[0].direct})
		if err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		if err := <-errc; !errors.Is(err, ErrStaleGeneration) {
			t.Errorf("old ring: got %v, want ErrStaleGeneration", err)
		}
		// Rank 1 is still on generation 1: node 0 refuses its stream.
		if err := old[1].AllReduce(context.Background(), make([]float32, 10)); !errors.Is(err, ErrStaleGeneration) && !errors.Is(err, ErrPeerLost) {
			t.Errorf("rank 1 on generation 1: got %v, want ErrStaleGeneration or ErrPeerLost", err)
		}
		if _, err := NewRing(nodes[0].ep, Config{Generation: 1, Rank: 0, Peers: peers, DialOptions: nodes[0].sec.DialOptions()}); !errors.Is(err, ErrStaleGeneration) {
			t.Errorf("NewRing for an older generation: got %v", err)
		}
	})
}

func TestContextCanceled(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		rings := buildRings(t, startNodesOn(t, tr, 2), 1, 5*time.Second, 0)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- rings[0].AllReduce(ctx, make([]float32, 10)) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("rank 0: got %v, want context.Canceled", err)
		}
		if err := rings[1].AllReduce(context.Background(), make([]float32, 10)); !errors.Is(err, ErrPeerLost) {
			t.Errorf("rank 1: got %v, want ErrPeerLost", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{},
		{Peers: []string{"a"}, Rank: 1},
		{Peers: []string{"a"}, ChunkBytes: 6},
		{Peers: []string{"a"}, ChunkBytes: MaxChunkBytes + 4},
		{Peers: []string{"a"}, Timeout: -1},
		{Peers: []string{"a", "b"}}, // no transport chosen: no plain-text default
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: got %v, want ErrInvalidConfig", c, err)
		}
	}
}

// TestCloseRightAfterSuccess: a rank that finishes an operation and closes its ring at once
// (the last step of a run, or a generation change) must not fail peers still completing that
// operation, although its stream's end may overtake, on another connection, the
// acknowledgement it sent before.
func TestCloseRightAfterSuccess(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr transport) {
		for _, world := range []int{2, 3} {
			nodes := startNodesOn(t, tr, world)
			for gen := uint64(1); gen <= 15; gen++ {
				rings := buildRings(t, nodes, gen, 10*time.Second, 0)
				bufs := randomBufs(world, 70_000, gen)
				errs := make([]error, world)
				var wg sync.WaitGroup
				for i, r := range rings {
					wg.Go(func() {
						errs[i] = r.AllReduce(context.Background(), bufs[i])
						r.Close()
					})
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						t.Fatalf("world %d generation %d rank %d: %v", world, gen, i, err)
					}
				}
			}
		}
	})
}
