package localrun

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holdPort starts this test binary as a process (argv[0] name, then args; working directory
// dir, "" for this one's) that listens on 127.0.0.1:port for hold, and waits for it to be
// listening; the process is killed at the end of the test.
func holdPort(t *testing.T, port int, hold time.Duration, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := &exec.Cmd{Path: exe, Args: append([]string{name}, args...), Dir: dir}
	cmd.Env = append(os.Environ(), "LOCALRUN_CHILD=listen", "LISTEN_PORT="+strconv.Itoa(port), "HOLD="+hold.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("listener on port %d: %q", port, line)
	}
	return cmd
}

// TestClaimPortsNamesOtherHolder: a recorded port on which a process that is not the run's
// listens is refused at once, naming its pid and command line (on one line, whatever its words
// hold), as ErrPortHeld; it was waited for 65 s and then named only as "in use" (a listener
// does not go away by waiting).
func TestClaimPortsNamesOtherHolder(t *testing.T) {
	out := t.TempDir()
	m, err := NewManifest("h", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	p := m.TrainerPorts[1].Listen
	// A word of its command line holds a newline (python3 -c "...", a shell script): still one line.
	holder := holdPort(t, p, time.Minute, "", "other-server", "--port", strconv.Itoa(p), "-c", "import a\nserve()")
	var said []string
	t0 := time.Now()
	err = m.ClaimPorts(out, 30*time.Second, func(s string) { said = append(said, s) })
	want := fmt.Sprintf("trainer-1's port 127.0.0.1:%d (recorded in %s) is held by pid %d (other-server --port %d -c import a serve()), which is not this run's: stop it, then resume again",
		p, filepath.Join(out, ManifestFile), holder.Process.Pid, p)
	if !errors.Is(err, ErrPortHeld) || err.Error() != want || len(said) != 0 {
		t.Fatalf("ClaimPorts = %v (said %q)\nwant %q, nothing said", err, said, want)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("ClaimPorts took %v to name the holder", took)
	}
	h, ok := FindPortHolder(p)
	if !ok || !h.Listening || h.PID != holder.Process.Pid || h.UID != os.Getuid() {
		t.Errorf("FindPortHolder(%d) = %+v, %v", p, h, ok)
	}
}

// TestClaimPortsWaitsForOwnProcess: a recorded port still held by a process of the run itself
// (its --data-dir one of the run's folders, given relative to its working directory: a child
// left from a killed supervisor, stopping) is waited for, said once with its name and pid, and
// claimed once that process lets go; the ports stay as recorded.
func TestClaimPortsWaitsForOwnProcess(t *testing.T) {
	out := t.TempDir()
	if err := os.Mkdir(CoordinatorDir(out, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := NewManifest("h", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(m)
	p := m.CoordinatorPorts[0].HTTP
	holder := holdPort(t, p, 1500*time.Millisecond, out, "ddpm", "coordinator", "--data-dir", "coordinator-0")
	var said []string
	if err := m.ClaimPorts(out, 30*time.Second, func(s string) { said = append(said, s) }); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("coordinator-0's port 127.0.0.1:%d (recorded in %s) is still held by this run's coordinator-0 (pid %d), left from its last session; waiting up to 30s for it to stop",
		p, filepath.Join(out, ManifestFile), holder.Process.Pid)
	if len(said) != 1 || said[0] != want || fmt.Sprint(m) != before {
		t.Fatalf("said %q\nwant [%q]; manifest %v, was %v", said, want, m, before)
	}
}

// TestClaimPortsTimeWait: a recorded port that is the local end of a closed connection in
// TIME_WAIT (no process holds it; it cannot be bound for up to 60 s) is said to be so, with the
// time it has left, and after the wait is ErrPortBusy.
func TestClaimPortsTimeWait(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	p := c.LocalAddr().(*net.TCPAddr).Port
	c.Close() // the side that closes first keeps TIME_WAIT
	time.Sleep(100 * time.Millisecond)
	s.Close()
	time.Sleep(100 * time.Millisecond)
	h, ok := FindPortHolder(p)
	if !ok || !h.TimeWait || h.PID != 0 || h.Remaining <= 0 || h.Remaining > 60*time.Second {
		t.Fatalf("FindPortHolder(%d) = %+v, %v; want a TIME_WAIT with up to 60 s left", p, h, ok)
	}
	if portFree(p) {
		t.Skip("this kernel lets a TIME_WAIT port be bound")
	}
	out := t.TempDir()
	m := Manifest{ConfigHash: "h", Coordinators: 1, Trainers: 1, CoordinatorPorts: []CoordinatorPorts{{Raft: p}}, TrainerPorts: []TrainerPorts{{}}}
	m.TrainerPorts = nil // only the coordinator's raft port is claimed
	var said []string
	err = m.ClaimPorts(out, 600*time.Millisecond, func(s string) { said = append(said, s) })
	prefix := fmt.Sprintf("coordinator-0's port 127.0.0.1:%d (recorded in %s) is held by a closed connection in TIME_WAIT (another ", p, filepath.Join(out, ManifestFile))
	if len(said) != 1 || !strings.HasPrefix(said[0], prefix) || !strings.HasSuffix(said[0], " s); waiting for it") {
		t.Fatalf("said %q, want one line %q... s); waiting for it", said, prefix)
	}
	if !errors.Is(err, ErrPortBusy) || !strings.HasPrefix(err.Error(), prefix) || !strings.HasSuffix(err.Error(), " s): resume again once it has ended") {
		t.Fatalf("ClaimPorts = %v", err)
	}
}

// TestClaimPortsHolderOutOfSight: a recorded port on which a process this user may not look into
// listens (here this test, run as root, holds it; ClaimPorts runs as nobody, who cannot read
// root's /proc/PID/fd) is refused at once as ErrPortHeld naming that user (root, uid 0): a
// listener of another user is not the run's and does not go away by waiting (it was waited for
// up to the bound, stop 25 changed that). Only as root (to start nobody's process).
func TestClaimPortsHolderOutOfSight(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another user")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := l.Addr().(*net.TCPAddr).Port
	// This test binary where nobody may run it.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // the test's temporary folders are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "localrun.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "run")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "LOCALRUN_CHILD=claim", "LISTEN_PORT="+strconv.Itoa(p), "WAIT=1s", "DIR="+out)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	what := fmt.Sprintf("trainer-0's port 127.0.0.1:%d (recorded in %s)", p, filepath.Join(out, ManifestFile))
	who := "a process of user root (uid 0) that this user cannot look into"
	want := fmt.Sprintf("error: %s is listened on by %s, which is not this run's (its processes run as this user, uid 65534): have it stopped, then resume again true\n", what, who)
	if string(got) != want {
		t.Fatalf("as nobody:\n%s\nwant\n%s", got, want)
	}
}

// TestClaimPortsNamesOtherRun: a recorded port held by a process of another ddpm local run (a
// copy of a run folder resumed while the original runs: the original's coordinator holds the
// ports both record) names that process by its run: "pid N (coordinator-0 of the ddpm local run
// ORIG)". It showed the first 80 characters of its command line, which end before its
// --data-dir.
func TestClaimPortsNamesOtherRun(t *testing.T) {
	orig, out := filepath.Join(t.TempDir(), "orig"), filepath.Join(t.TempDir(), "copy")
	m, err := NewManifest("h", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{orig, out} {
		if err := WriteManifest(dir, m); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(CoordinatorDir(dir, 0), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := m.CoordinatorPorts[0].Raft
	holder := holdPort(t, p, time.Minute, orig, "/usr/local/bin/ddpm", "coordinator", "--id", "c0", "--raft-addr", "127.0.0.1:"+strconv.Itoa(p), "--data-dir", "coordinator-0")
	err = m.ClaimPorts(out, 30*time.Second, func(s string) { t.Errorf("said %q", s) })
	want := fmt.Sprintf("coordinator-0's port 127.0.0.1:%d (recorded in %s) is held by pid %d (coordinator-0 of the ddpm local run %s), which is not this run's: stop it, then resume again",
		p, filepath.Join(out, ManifestFile), holder.Process.Pid, orig)
	if !errors.Is(err, ErrPortHeld) || err.Error() != want {
		t.Fatalf("ClaimPorts = %v\nwant %q", err, want)
	}
}
