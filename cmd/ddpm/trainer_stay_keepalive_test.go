package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// getOn sends GET path on the open HTTP/1.1 connection conn (kept alive) and returns the status
// and body of the answer read from r.
func getOn(conn net.Conn, r *bufio.Reader, path string) (int, string, error) {
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, "", err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: trainer\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestStayAfterDoneKeepsConnections: a --stay-after-done trainer stays up on the servers its
// run loop started: an HTTP connection to --http-addr opened (and used) while the run trains
// stays open after the run succeeds, and /readyz on it answers 200 with the run-complete line;
// a gRPC connection (the cluster's mutual TLS) to --listen made ready during the run stays
// ready, never closed. The trainer used to close --listen and --http-addr when the run loop
// ended and open them again, a gap in which probes were refused and every open connection was
// closed.
func TestStayAfterDoneKeepsConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	// min_trainers 2: the run waits for t1, which starts only once both connections are made
	// and used, so they are made while the run is going however fast it would train (12
	// steps take well under a second).
	run, cfg := procRun(t, dir, 12, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, _ := startReplica(t, run, "dev", certs)
	listen, httpAddr := freeAddr(t), freeAddr(t)
	p := launchTrainer(t, bin, filepath.Join(dir, "t0"), "t0", listen, coord, cfg, certs, "--stay-after-done", "--http-addr", httpAddr)

	var conn net.Conn
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if conn, err = net.Dial("tcp", httpAddr); err == nil {
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("the trainer exited (%v) before serving --http-addr:\n%s", p.err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("--http-addr %s not served within 60 s: %v", httpAddr, err)
		}
	}
	defer conn.Close()
	// The gRPC connection: every state it moves to after READY is sent on moved.
	gc, err := grpc.NewClient(listen, tlsauthtest.Load(t, certs, nil).DialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()
	gc.Connect()
	rctx, rcancel := context.WithTimeout(context.Background(), 60*time.Second)
	for s := gc.GetState(); s != connectivity.Ready; s = gc.GetState() {
		if !gc.WaitForStateChange(rctx, s) {
			t.Fatalf("the gRPC connection to --listen %s is %v after 60 s, not ready", listen, s)
		}
	}
	rcancel()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	moved := make(chan connectivity.State, 16)
	go func() {
		for s := connectivity.Ready; gc.WaitForStateChange(wctx, s); {
			s = gc.GetState()
			moved <- s
		}
	}()
	r := bufio.NewReader(conn)
	want := "ok: the run is complete (step 12); serving this volume's committed checkpoints (newest: step 12) to ddpm checkpoint fetch\n"
	code, body, err := getOn(conn, r, "/healthz")
	if err != nil || code != http.StatusOK || body == want {
		t.Fatalf("GET /healthz while the run waits for its second trainer: %d %q, %v; want 200 and what the trainer does", code, body, err)
	}
	launchTrainer(t, bin, filepath.Join(dir, "t1"), "t1", freeAddr(t), coord, cfg, certs)

	waitStayingUp(t, p, 90*time.Second)
	for _, path := range []string{"/readyz", "/healthz"} {
		code, body, err := getOn(conn, r, path)
		if err != nil || code != http.StatusOK || body != want {
			t.Fatalf("GET %s on the connection opened during the run, after it: %d %q, %v; want 200 %q", path, code, body, err, want)
		}
	}

	// A closed server's connection leaves READY within milliseconds (the loop closed --listen
	// before the line); a second is ample.
	select {
	case st := <-moved:
		t.Fatalf("the gRPC connection to --listen made during the run went from READY to %v", st)
	case <-time.After(time.Second):
	}

	termExitsClean(t, p)
}
