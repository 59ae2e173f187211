package checkpoint

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// serve starts a real gRPC server on a loopback port with st's transfer service, mutual TLS
// with a fresh certificate directory (refusals logged to log, when not nil) and the given server
// options. It returns its address and the directory, for clients.
func serve(t *testing.T, st *Store, log *tlsauthtest.Log, opts ...grpc.ServerOption) (string, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	certs := tlsauthtest.Dir(t)
	srv := grpc.NewServer(append(tlsauthtest.Load(t, certs, log).ServerOptions(), opts...)...)
	RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), certs
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
	addr, certs := serve(t, src, nil)
	dial := tlsauthtest.Load(t, certs, nil).DialOptions()
	dst := openT(t, filepath.Join(t.TempDir(), "dst.db"), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Fetch(ctx, addr, 5, dst, dial...); err != nil {
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
		if err := Fetch(ctx, addr, step, dst, dial...); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Fetch of step %d (not committed / absent): %v, want ErrNotFound", step, err)
		}
	}
	if err := Fetch(ctx, "127.0.0.1:1", 5, dst, dial...); !errors.Is(err, ErrTransfer) {
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
		// An authenticated but hostile peer: a consistent header asking for 4 x 16 GiB. It is
		// refused before the receiver allocates anything.
		"header asks for 64 GiB": {func(n int, m *api.CheckpointFetchResponse) bool {
			if h := m.GetHeader(); h != nil {
				for i := range h.ArenaLen {
					h.ArenaLen[i] = MaxArenaLen
				}
			}
			return true
		}, ErrTransfer},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			addr, certs := serve(t, src, nil, tamper(tc.f))
			dst := openT(t, filepath.Join(t.TempDir(), "dst.db"), Options{})
			err := Fetch(ctx, addr, 5, dst, tlsauthtest.Load(t, certs, nil).DialOptions()...)
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

// TestTransferRefusesOutsiders: a peer without the cluster's CA or join secret gets nothing
// from the transfer service; both sides name the cause.
func TestTransferRefusesOutsiders(t *testing.T) {
	src, _ := sourceStore(t)
	log := &tlsauthtest.Log{}
	addr, certs := serve(t, src, log)
	dst := openT(t, filepath.Join(t.TempDir(), "dst.db"), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	err := Fetch(ctx, addr, 5, dst, tlsauthtest.Load(t, tlsauthtest.Dir(t), nil).DialOptions()...)
	if !errors.Is(err, ErrTransfer) || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("peer of another CA: %v", err)
	}
	log.Wait(t, "tlsauth: refused connection", "bad certificate")

	err = Fetch(ctx, addr, 5, dst, tlsauthtest.Load(t, tlsauthtest.WrongSecret(t, certs), nil).DialOptions()...)
	if !errors.Is(err, ErrTransfer) || !strings.Contains(err.Error(), "code = Unauthenticated desc = ddpm: wrong join secret") {
		t.Fatalf("peer with the wrong join secret: %v", err)
	}
	log.Wait(t, "tlsauth: refused call", "CheckpointTransfer/Fetch", "wrong join secret")

	err = Fetch(ctx, addr, 5, dst, tlsauthtest.Insecure(t).DialOptions()...)
	if !errors.Is(err, ErrTransfer) {
		t.Fatalf("plain-text peer: %v", err)
	}
	log.Wait(t, "first record does not look like a TLS handshake")
	if list, _ := dst.List(); len(list) != 0 {
		t.Fatalf("refused peers received %d checkpoints", len(list))
	}
}
