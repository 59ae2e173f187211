package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"ddpm/checkpoint"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestCheckpointFetchMessages: the lines of ddpm checkpoint fetch for what a user gets wrong.
// A step --out already holds with the same sha256 used to print the line of a real write; a
// missing step said "checkpoint not found: checkpoint not found"; --out in a missing folder
// "open ...: no such file or directory"; an address serving no checkpoint transfer (a
// coordinator's) gRPC's "unknown service"; --insecure against a TLS trainer "error reading
// server preface: EOF" alone.
func TestCheckpointFetchMessages(t *testing.T) {
	addr, sums := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 1))
	dir := t.TempDir()
	out := filepath.Join(dir, "new.db")
	fetch := func(addr string, step int64, to string) (string, []string, error) {
		args := []string{"checkpoint", "fetch", addr, "--step", fmt.Sprint(step), "--out", to, "--insecure"}
		stdout, err := runCLI(t, context.Background(), nil, args...)
		return stdout, args, err
	}
	if got, args, err := fetch(addr, 50, out); err != nil || got != fmt.Sprintf("%s: step 50 (sha256 %s) -> %s\n", addr, sums[0][:16], out) {
		t.Fatalf("ddpm %v: %q, %v", args, got, err)
	}
	before := fileSum(t, out)
	if got, args, err := fetch(addr, 50, out); err != nil || got != fmt.Sprintf("%s: step 50 (sha256 %s) is already in %s, committed; unchanged\n", addr, sums[0][:16], out) {
		t.Fatalf("ddpm %v (again): %q, %v", args, got, err)
	}
	if fileSum(t, out) != before {
		t.Errorf("%s changed by fetching a step it holds", out)
	}

	_, args, err := fetch(addr, 60, filepath.Join(dir, "other.db"))
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s holds no committed checkpoint of step 60 (ddpm status lists the committed ones)", addr))
	mustNotExist(t, filepath.Join(dir, "other.db"))

	missing := filepath.Join(dir, "f", "new.db")
	_, args, err = fetch(addr, 50, missing)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: --out %s: folder %s does not exist", missing, filepath.Join(dir, "f")))

	// A gRPC server without the CheckpointTransfer service, as a coordinator's address is.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tlsauthtest.Insecure(t).ServerOptions()...)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	_, args, err = fetch(lis.Addr().String(), 50, filepath.Join(dir, "c.db"))
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s serves no checkpoint transfer (a coordinator's address? give a trainer's --listen address)", lis.Addr()))

	// A trainer serving mutual TLS, dialed --insecure.
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "tls.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tsrv := grpc.NewServer(tlsauthtest.Load(t, tlsauthtest.Dir(t), nil).ServerOptions()...)
	checkpoint.RegisterTransfer(tsrv, st)
	go tsrv.Serve(tlis)
	t.Cleanup(tsrv.Stop)
	_, args, err = fetch(tlis.Addr().String(), 50, filepath.Join(dir, "t.db"))
	want := fmt.Sprintf(" (the trainer at %s closed the connection at once: it may require TLS; give --certs DIR instead of --insecure)", tlis.Addr())
	if err == nil || len(err.Error()) < len(want) || err.Error()[len(err.Error())-len(want):] != want {
		t.Errorf("ddpm %v: %v\nwant it to end %q", args, err, want)
	}
	mustNotExist(t, filepath.Join(dir, "t.db"))
}
