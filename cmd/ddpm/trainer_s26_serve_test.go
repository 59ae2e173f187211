package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
)

// errS26Broken is the Accept error of a listener a test broke (s26BreakableListener).
var errS26Broken = errors.New("accept: the test broke this listener")

// s26BreakableListener is a real TCP listener whose Accept, once broken, fails for good with
// errS26Broken (as an Accept failing with an error no server retries); accepting is closed at
// the first Accept, when a server serves on it.
type s26BreakableListener struct {
	net.Listener
	accepting chan struct{}
	first     sync.Once
	broken    atomic.Bool
}

func (l *s26BreakableListener) Accept() (net.Conn, error) {
	l.first.Do(func() { close(l.accepting) })
	c, err := l.Listener.Accept()
	if err != nil && l.broken.Load() {
		return nil, errS26Broken
	}
	return c, err
}

// breakNow makes the pending and every later Accept fail.
func (l *s26BreakableListener) breakNow() {
	l.broken.Store(true)
	l.Listener.Close()
}

// breakableListenS26 makes the trainer bind addr (its --listen or --http-addr) as a breakable
// listener, through the listenTCP seam, until the test ends; other addresses bind as before.
func breakableListenS26(t *testing.T, addr string) *s26BreakableListener {
	t.Helper()
	bl := &s26BreakableListener{accepting: make(chan struct{})}
	old := listenTCP
	listenTCP = func(network, a string) (net.Listener, error) {
		l, err := net.Listen(network, a)
		if err != nil || a != addr {
			return l, err
		}
		bl.Listener = l
		return bl, nil
	}
	t.Cleanup(func() { listenTCP = old })
	return bl
}

// stdoutS26 sends this process's stdout, where an in-process trainer logs (newProcessLogger),
// to a buffer until the test ends; lines returns the JSON records logged so far.
type stdoutS26 struct {
	mu  sync.Mutex
	buf strings.Builder
}

func captureStdoutS26(t *testing.T) *stdoutS26 {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &stdoutS26{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 64<<10)
		for {
			n, err := r.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	old := os.Stdout
	os.Stdout = w
	t.Cleanup(func() {
		os.Stdout = old
		w.Close()
		<-done
		r.Close()
	})
	return s
}

// records returns the JSON records logged so far whose msg is msg.
func (s *stdoutS26) records(msg string) []map[string]any {
	s.mu.Lock()
	text := s.buf.String()
	s.mu.Unlock()
	return jsonRecords([]byte(text), msg)
}

// waitRecordS26 waits (a minute at most) for a record msg in s, or for done to be closed.
func waitRecordS26(t *testing.T, s *stdoutS26, msg string, done <-chan struct{}) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if recs := s.records(msg); len(recs) > 0 {
			return recs[0]
		}
		select {
		case <-done:
			t.Fatalf("the trainer returned before logging %q", msg)
		default:
		}
		if time.Now().After(deadline) {
			s.mu.Lock()
			text := s.buf.String()
			s.mu.Unlock()
			t.Fatalf("no %q logged within a minute; the log:\n%s", msg, text)
		}
	}
}

// runTrainerS26 runs `ddpm trainer args...` in this process until ctx ends; the returned channel
// gets its error once it returns.
func runTrainerS26(ctx context.Context, args ...string) <-chan error {
	cmd := newTrainerCmd()
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	res := make(chan error, 1)
	go func() { res <- cmd.ExecuteContext(ctx) }()
	return res
}

// TestTrainerS26GRPCServeStopped: a cluster trainer that has joined a real replica (alone in a
// run of min_trainers 2, so it waits for a rank) and whose gRPC server on --listen stops serving
// (its listener's Accept fails for good) logs one ERROR line naming --listen, leaves the cluster
// (the replica lists it no more when it has returned) and ends with status 1 and one line, which
// ddpm local and Kubernetes restart. The serve error was dropped: the trainer stayed a member
// that no ring peer or checkpoint fetch could reach, saying nothing.
func TestTrainerS26GRPCServeStopped(t *testing.T) {
	// With --insecure the gRPC server serves on allreduce.DirectListener's wrapper of the
	// listener (the ring's direct connections): the wrapper must pass the failure on as it is.
	for _, insecure := range []bool{false, true} {
		t.Run(map[bool]string{false: "certs", true: "insecure"}[insecure], func(t *testing.T) {
			c := startClusterS27(t, insecure, 8, 5*time.Second, nil)
			sec := []string{"--certs", c.certs}
			if insecure {
				sec = []string{"--insecure"}
			}
			listen := freeAddr(t)
			bl := breakableListenS26(t, listen)
			out := captureStdoutS26(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res := runTrainerS26(ctx, append([]string{"--id", "t0", "--coordinator", c.coord, "--listen", listen,
				"--data-dir", filepath.Join(c.dir, "t0"), "--config", c.cfg}, sec...)...)
			waitFor(t, c.cli, "member t0", time.Minute, func(st *fsm.State) bool { return st.Members["t0"] != nil })
			<-bl.accepting
			bl.breakNow()
			var err error
			select {
			case err = <-res:
			case <-time.After(time.Minute):
				cancel()
				<-res
				t.Fatal("the trainer ran on a minute after its gRPC server stopped serving")
			}
			var ee *exitError
			want := "trainer: gRPC server stopped serving on --listen " + listen + ": " + errS26Broken.Error() +
				"; stopping the trainer (exit 1) so that a restart binds the port again"
			if !errors.As(err, &ee) || ee.code != 1 || err.Error() != want || !errors.Is(err, ErrTrainerGRPCStopped) {
				t.Fatalf("trainer whose gRPC server stopped: %v\nwant exit 1 and %q", err, want)
			}
			rec := waitRecordS26(t, out, coordinator.MsgGRPCStopped, nil)
			if rec["level"] != "ERROR" || rec["addr"] != "--listen "+listen || rec["err"] != errS26Broken.Error() {
				t.Errorf("logged %v; want ERROR %q with addr %q, err %q", rec, coordinator.MsgGRPCStopped, "--listen "+listen, errS26Broken)
			}
			// The log reaches the buffer through a pipe: waited for, as the ERROR line is. The trainer
			// gives its leave 3 s (it exits rather than wait for a slow coordinator): on a machine so
			// loaded that the replica's commit takes longer, it says it could not leave, and the
			// replica drops it at its heartbeat timeout instead. Either way it tried, and t0 goes.
			const couldNotLeave = "could not leave the cluster; it drops this trainer at its heartbeat timeout"
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
				if recs := out.records(MsgLeftOnFailure); len(recs) > 0 {
					if recs[0]["err"] != want {
						t.Errorf("logged %v; want %q with err %q", recs[0], MsgLeftOnFailure, want)
					}
					break
				}
				if recs := out.records(couldNotLeave); len(recs) > 0 {
					t.Logf("the leave timed out on this machine (%v); the replica drops t0 at its heartbeat timeout", recs[0]["err"])
					break
				}
				if time.Now().After(deadline) {
					out.mu.Lock()
					text := out.buf.String()
					out.mu.Unlock()
					t.Fatalf("neither %q nor %q logged within a minute of the trainer's return; the log:\n%s", MsgLeftOnFailure, couldNotLeave, text)
				}
			}
			waitFor(t, c.cli, "t0 gone from the members", time.Minute, func(st *fsm.State) bool { return st.Members["t0"] == nil })
		})
	}
}

// TestTrainerS26HTTPServeStoppedLogged: a cluster trainer whose plain HTTP server on --http-addr
// stops serving logs one ERROR line naming --http-addr and its error, and goes on (its failing
// probes restart it where a kubelet probes). The error was dropped: /healthz, /readyz and
// /metrics went silent with nothing in the log saying why.
func TestTrainerS26HTTPServeStoppedLogged(t *testing.T) {
	httpAddr := freeAddr(t)
	bl := breakableListenS26(t, httpAddr)
	out := captureStdoutS26(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := runTrainerS26(ctx, "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t),
		"--http-addr", httpAddr, "--data-dir", t.TempDir(), "--insecure")
	done := make(chan struct{})
	var err error
	go func() { err = <-res; close(done) }()
	select {
	case <-bl.accepting:
	case <-done:
		t.Fatalf("the trainer returned before serving --http-addr: %v", err)
	}
	bl.breakNow()
	rec := waitRecordS26(t, out, coordinator.MsgHTTPStopped, done)
	if rec["level"] != "ERROR" || rec["addr"] != "--http-addr "+httpAddr || rec["err"] != errS26Broken.Error() {
		t.Errorf("logged %v; want ERROR %q with addr %q, err %q", rec, coordinator.MsgHTTPStopped, "--http-addr "+httpAddr, errS26Broken)
	}
	select {
	case <-done:
		t.Fatalf("the trainer returned (%v) when its HTTP server stopped; want it to go on", err)
	default:
	}
	cancel()
	<-done
}
