package main

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestTrainerSIGTERMWhileJoining: a trainer whose coordinator never answers (a port nobody
// listens on) is still trying to join when the first SIGTERM comes; it leaves at once with
// status 0 and says so, instead of waiting for a second signal.
func TestTrainerSIGTERMWhileJoining(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.DDPMBinary(t), "trainer", "--id", "t0", "--coordinator", dead,
		"--listen", freeAddr(t), "--data-dir", filepath.Join(t.TempDir(), "vol"), "--preset", "mnist", "--insecure")
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until it is trying to join (the dataset loaded, the signal handler set), then a
	// moment more so that the join is retrying.
	for !strings.Contains(out.String(), `"msg":"joining"`) {
		if ctx.Err() != nil {
			t.Fatalf("the trainer never started joining; output:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if took := time.Since(t0); err != nil || took > 5*time.Second {
		t.Fatalf("after one SIGTERM: exit %v after %v; output:\n%s", err, took, out.String())
	}
	if !strings.Contains(out.String(), `"msg":"left before joining"`) {
		t.Fatalf("no 'left before joining' line; output:\n%s", out.String())
	}
}
