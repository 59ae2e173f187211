package chaos

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"ddpm/allreduce"
)

// TestRingGivesUpBeforeReady pins a hang a chaos run found (a trainer restarted after a kill got
// a stale assignment, built a ring whose peer had moved to the next generation, and blocked in
// AllReduce forever, so the cluster never resumed): a ring whose peer never connects must fail
// AllReduce within its Timeout, and a cancelled caller must get its call back at once.
func TestRingGivesUpBeforeReady(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(allreduce.ServerOptions()...)
	ep := allreduce.Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	// The peer's port: bound, then closed, so nobody listens there.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	for _, tc := range []struct {
		name   string
		cancel time.Duration // 0: let the ring's Timeout expire
		want   error
	}{
		{"timeout", 0, allreduce.ErrPeerLost},
		{"cancelled", 300 * time.Millisecond, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const timeout = time.Second
			r, err := allreduce.NewRing(ep, allreduce.Config{Generation: 7, Rank: 0, Peers: []string{lis.Addr().String(), deadAddr}, Timeout: timeout,
				DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel > 0 {
				time.AfterFunc(tc.cancel, cancel)
			}
			done := make(chan error, 1)
			t0 := time.Now()
			go func() { done <- r.AllReduce(ctx, make([]float32, 1024)) }()
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Errorf("AllReduce: %v, want %v", err, tc.want)
				}
				t.Logf("AllReduce returned after %v: %v", time.Since(t0).Round(time.Millisecond), err)
			case <-time.After(timeout + 10*time.Second):
				t.Fatalf("AllReduce to a peer that never connects is still blocked after %v (Timeout %v)", time.Since(t0).Round(time.Millisecond), timeout)
			}
		})
	}
}
