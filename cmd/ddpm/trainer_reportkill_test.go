package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"ddpm/api"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// rawFrame is one gRPC message as bytes: reportGate forwards messages without decoding them.
type rawFrame struct{ b []byte }

// rawCodec passes rawFrames through unchanged (registered under "proto", the name the
// coordinator's clients and server use).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(*rawFrame).b, nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	v.(*rawFrame).b = append([]byte(nil), data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// reportGate is a gRPC proxy in front of a coordinator replica, with the cluster's mutual TLS on
// both sides. It forwards every call, except that while holdAfter is positive it answers a
// ReportProgress of a later step with Unavailable, as a coordinator that does not answer: the
// trainer's reports of those steps stay queued while its other calls (CheckpointReady, the
// commit's poll) go through. That stretches the moment after an outage when both kinds of call
// resume and the queued reports are still draining while a checkpoint commits.
type reportGate struct {
	addr      string
	holdAfter atomic.Int64
	held      atomic.Int64 // ReportProgress calls answered Unavailable
}

// startReportGate serves the proxy on a free loopback address until the test ends; calls go on
// to the replica at target.
func startReportGate(t *testing.T, sec *tlsauth.Bundle, target string) *reportGate {
	t.Helper()
	g := &reportGate{}
	up, err := grpc.NewClient(target, sec.DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	srv := grpc.NewServer(append(sec.ServerOptions(), grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error { return g.forward(ss, up) }))...)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = lis.Addr().String()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return g
}

// forward relays one call (unary or streaming) from ss to the replica behind up.
func (g *reportGate) forward(ss grpc.ServerStream, up *grpc.ClientConn) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	cs, err := up.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return err
	}
	upErr := make(chan error, 1)
	go func() {
		for {
			f := &rawFrame{}
			if err := ss.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					err = cs.CloseSend()
				}
				upErr <- err
				return
			}
			if method == api.Coordinator_ReportProgress_FullMethodName {
				var req api.ReportProgressRequest
				if err := proto.Unmarshal(f.b, &req); err != nil {
					upErr <- err
					return
				}
				if h := g.holdAfter.Load(); h > 0 && req.Step > h {
					g.held.Add(1)
					upErr <- status.Errorf(codes.Unavailable, "test gate: report of step %d held", req.Step)
					return
				}
			}
			if err := cs.SendMsg(f); err != nil {
				upErr <- nil // the replica's answer (RecvMsg below) says why
				return
			}
		}
	}()
	down := make(chan error, 1)
	go func() {
		if md, err := cs.Header(); err == nil {
			_ = ss.SendHeader(md)
		}
		for {
			f := &rawFrame{}
			if err := cs.RecvMsg(f); err != nil {
				ss.SetTrailer(cs.Trailer())
				if errors.Is(err, io.EOF) {
					err = nil
				}
				down <- err
				return
			}
			if err := ss.SendMsg(f); err != nil {
				down <- err
				return
			}
		}
	}()
	for {
		select {
		case err := <-upErr:
			if err != nil {
				cancel()
				<-down // no use of ss once the handler returns
				return err
			}
			upErr = nil // the caller is done sending; wait for the replica's answer
		case err := <-down:
			return err
		}
	}
}

// TestKilledTrainerLossHistoryComplete: a trainer process whose progress reports after step 5
// go unanswered (reportGate) while its other calls reach the only coordinator replica saves
// checkpoint 8; the replica then goes down, and the trainer is killed (SIGKILL) while it is
// down, with its reports queued (trainer.ReportQueue). The replica comes back on the same data
// and addresses, the reports pass again, and the trainer is started again on the same volume:
// the run finishes, and its loss history holds one point for each step 1..32.
//
// A trainer used to report checkpoint 8 while the reports of steps 6-8 were still queued, so
// the cluster committed it; restarted, the run went on from step 8 and steps 6-8 were never
// reported again: `ddpm loss` had a gap. Now a checkpoint is reported only once the reports of
// the steps before it reached the coordinators: step 8 is not committed while they are held,
// the run restarts from step 4, and steps 5-8 are trained and reported again.
func TestKilledTrainerLossHistoryComplete(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 32, 1, 1, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	sec := tlsauthtest.Load(t, certs, nil)
	grpcAddr, raftAddr, coordDir := freeAddr(t), freeAddr(t), filepath.Join(dir, "coord")
	gate := startReportGate(t, sec, grpcAddr)
	gate.holdAfter.Store(5)
	start := func() *coordinator.Node {
		t.Helper()
		var node *coordinator.Node
		var err error
		for range 50 { // the ports of a closed node may take a moment to be free again
			// The replica names the gate as its gRPC address: the trainer learns no other.
			node, err = coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
				Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: gate.addr}}, DataDir: coordDir,
				Bootstrap: true, Run: &run, Version: "dev", Security: sec})
			if err == nil {
				return node
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
		return nil
	}
	node := start()
	t.Cleanup(func() { node.Close() })
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })

	listen, vol := freeAddr(t), filepath.Join(dir, "t0")
	tr := launchTrainer(t, bin, vol, "t0", listen, gate.addr, cfg, certs)
	saved8 := `"msg":"checkpoint saved","trainer":"t0","step":8,`
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(readTestFile(t, tr.log), saved8) {
		if time.Now().After(deadline) {
			t.Fatalf("the trainer did not save step 8; log:\n%s", readTestFile(t, tr.log))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A report of checkpoint 8 is taken and committed within milliseconds: wait for its commit
	// for a second, not longer (it is not reported while the reports before it are held).
	var before *fsm.State
	for end := time.Now().Add(time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		before, err = cli.State(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(before.Checkpoints, func(c fsm.Checkpoint) bool { return c.Step == 8 }) || time.Now().After(end) {
			break
		}
	}
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-tr.exited
	if gate.held.Load() == 0 {
		t.Fatal("no report was held: the trainer reported past step 5 before the gate closed")
	}
	var committed []int64
	for _, c := range before.Checkpoints {
		committed = append(committed, c.Step)
	}
	t.Logf("before the outage: reported step %d, checkpoints %v committed, %d reports held", before.Step, committed, gate.held.Load())

	node = start()
	gate.holdAfter.Store(0)
	tr = launchTrainer(t, bin, vol, "t0", listen, gate.addr, cfg, certs)
	select {
	case <-tr.exited:
		if tr.err != nil {
			t.Fatalf("t0: %v; stderr:\n%s", tr.err, tr.stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("t0 did not finish the run within 3 minutes (log %s)", tr.log)
	}
	final := waitFor(t, cli, "run success", 10*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if final.Status != fsm.StatusSucceeded {
		t.Fatalf("run %s (%s), want succeeded", final.Status, final.Reason)
	}
	var got, want []string
	for _, p := range final.Loss.Points {
		got = append(got, fmt.Sprint(p.Step))
	}
	for s := int64(1); s <= run.Steps; s++ {
		want = append(want, fmt.Sprint(s))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("loss history steps %v, want %v (checkpoints committed before the outage: %v)", got, want, committed)
	}
}

func readTestFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
