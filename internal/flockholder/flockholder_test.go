package flockholder

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPIDOfAnotherProcess: a child process (flock(1)) holds the lock; PID names exactly it,
// and 0 once it and the children that inherited the lock have exited.
func TestPIDOfAnotherProcess(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	path := filepath.Join(t.TempDir(), "held")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// The child takes the lock, says so on stdout, and sleeps until killed.
	cmd := exec.Command("flock", "--exclusive", path, "sh", "-c", "echo locked; exec sleep 60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // sh and sleep inherit the lock
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := out.Read(buf); err != nil || string(buf[:6]) != "locked" {
		t.Fatalf("child did not lock: %q %v", buf, err)
	}
	// flock(1) takes the lock in its own process and then forks sh, which execs sleep; the
	// lock belongs to flock(1)'s open file description, listed under the PID that took it.
	got := PID(path)
	if got != cmd.Process.Pid {
		t.Fatalf("PID = %d, want the flock(1) child %d", got, cmd.Process.Pid)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for PID(path) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("PID = %d after the holder exited, want 0", PID(path))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPIDOfThisProcess: a lock this process holds names this process; a file nobody locks and
// a missing file give 0.
func TestPIDOfThisProcess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mine")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := PID(path); got != 0 {
		t.Fatalf("unlocked file: PID = %d, want 0", got)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	if got := PID(path); got != os.Getpid() {
		t.Fatalf("PID = %d, want this process %d", got, os.Getpid())
	}
	if got := PID(filepath.Join(dir, "missing")); got != 0 {
		t.Fatalf("missing file: PID = %d, want 0", got)
	}
}
