package checkpoint

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/api"
)

// serve starts a real gRPC server on a loopback port with st's transfer service and the given
// server options, and returns its address.
func serve(t *testing.T, st *Store, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// tamper is a server stream interceptor that lets f rewrite (or drop, returning false) every
// outgoing message of the transfer, as a faulty network or peer would.
func tamper(f func(n int, m *api.CheckpointFetchResponse) bool) grpc.ServerOption {
	return grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &tamperStream{ServerStream: ss, f: f})
	})
}

type tamperStream struct {
	grpc.ServerStream
	f func(int, *api.CheckpointFetchResponse) bool
	n int
}

func (s *tamperStream) SendMsg(m any) error {
	s.n++
	if msg, ok := m.(*api.CheckpointFetchResponse); ok && !s.f(s.n, msg) {
		return nil
	}
	return s.ServerStream.SendMsg(m)
}

func sourceStore(t *testing.T) (*Store, string) {
	t.Helper()
	src := openT(t, filepath.Join(t.TempDir(), "src.db"), Options{ChunkBytes: 1 << 18})
	sum := saveT(t, src, testState(5, 600_000)) // 2.4 MB per arena: several messages each
	if err := src.MarkCommitted(5); err != nil {
		t.Fatal(err)
	}
	saveT(t, src, testState(6, 100)) // not committed: not served
	return src, sum
}

func TestTransferLoopback(t *testing.T) {
	src, sum := sourceStore(t)
	addr := serve(t, src)
	dst := openT(t, filepath.Join(t.TempDir(), "dst.db"), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Fetch(ctx, addr, 5, dst); err != nil {
		t.Fatal(err)
	}
	c, err := dst.LatestCommitted()
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, c, testState(5, 600_000))
	if c.SHA256 != sum {
		t.Fatalf("received sha256 %s, source %s", c.SHA256, sum)
	}
	for _, step := range []int64{6, 7} {
		if err := Fetch(ctx, addr, step, dst); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Fetch of step %d (not committed / absent): %v, want ErrNotFound", step, err)
		}
	}
	if err := Fetch(ctx, "127.0.0.1:1", 5, dst); !errors.Is(err, ErrTransfer) {
		t.Fatalf("Fetch from a closed port: %v, want ErrTransfer", err)
	}
}

func TestTransferCorruptedRejected(t *testing.T) {
	src, _ := sourceStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cases := map[string]struct {
		f    func(int, *api.CheckpointFetchResponse) bool
		want error
	}{
		"flipped byte in transit": {func(n int, m *api.CheckpointFetchResponse) bool {
			if ch := m.GetChunk(); ch != nil && n == 7 {
				ch.Data = append([]byte(nil), ch.Data...)
				ch.Data[12345] ^= 1
			}
			return true
		}, ErrCorruptCheckpoint},
		"header altered": {func(n int, m *api.CheckpointFetchResponse) bool {
			if h := m.GetHeader(); h != nil {
				h.Cursor++
			}
			return true
		}, ErrCorruptCheckpoint},
		"stream cut short": {func(n int, m *api.CheckpointFetchResponse) bool { return n < 20 }, ErrTransfer},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			addr := serve(t, src, tamper(tc.f))
			dst := openT(t, filepath.Join(t.TempDir(), "dst.db"), Options{})
			err := Fetch(ctx, addr, 5, dst)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Fetch: %v, want %v", err, tc.want)
			}
			if list, _ := dst.List(); len(list) != 0 {
				t.Fatalf("the receiver kept %d checkpoints of a bad transfer", len(list))
			}
		})
	}
	// The source itself is fine.
	if err := src.Verify(5); err != nil {
		t.Fatal(err)
	}
}
