package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestLocalS26OutNotWritable: `ddpm local --out DIR/run` run by a user who may not write DIR
// (uid 65534 against root's folder; a read-only mount is met the same way) is one line naming
// --out and the folder, status 2, and nothing is made. It was mkdir's own words ("mkdir
// DIR/run: permission denied"), status 1. Skipped unless the test runs as root (only root can
// start a process of another user).
func TestLocalS26OutNotWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run ddpm local as another user")
	}
	const uid = 65534
	dir := t.TempDir()
	// The user reaches dir through its parents and may read it, not write it; it runs its own
	// copy of the binary (the test build's folder is root's alone).
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(testutil.DDPMBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "ddpm")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	imgs := filepath.Join(dir, "imgs")
	writeImages(t, imgs, 4, 32, true)
	out := filepath.Join(dir, "run")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "local", "--data", imgs, "--preset", "mnist", "--steps", "10", "--checkpoint-every", "10", "--out", out, "--quiet")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	want := "ddpm: --out " + out + ": cannot create the run folder in folder " + dir + " (permission denied); nothing was written\n"
	if code := cmd.ProcessState.ExitCode(); code != 2 || stderr.String() != want || stdout.Len() != 0 {
		t.Fatalf("ddpm local --out %s as uid %d: exit %d, stdout %q, stderr %q\nwant exit 2 and stderr %q", out, uid, code, stdout.String(), stderr.String(), want)
	}
	mustNotExist(t, out)
}
