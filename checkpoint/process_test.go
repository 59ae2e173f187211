package checkpoint

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ddpm/internal/rng"
)

// The tests below re-execute the test binary as a child process (env childEnv names the role),
// because file locks and SIGKILL only mean something across real processes.
const (
	childEnv     = "DDPM_CHECKPOINT_TEST_CHILD"
	childPathEnv = "DDPM_CHECKPOINT_TEST_PATH"
	crashN       = 100_000 // floats per arena in the crash test: 1.6 MB per checkpoint
)

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "hold":
		childHold(os.Getenv(childPathEnv))
	case "saveloop":
		childSaveLoop(os.Getenv(childPathEnv))
	case "replacelimited":
		childReplaceLimited(os.Getenv(childPathEnv))
	default:
		fmt.Fprintln(os.Stderr, "unknown child role")
		os.Exit(2)
	}
}

// childHold opens the store read-write, says "ready", and holds it until stdin closes.
func childHold(path string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	s.Close()
	os.Exit(0)
}

// childSaveLoop plays a trainer: it resumes after the newest verified checkpoint and saves,
// commits and prunes in a loop until killed, announcing each save before and after.
func childSaveLoop(path string) {
	s, err := Open(path, Options{ChunkBytes: 1 << 18})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	step := int64(1)
	if c, err := s.LatestVerified(); err == nil {
		step = c.Step + 1
	} else if !errors.Is(err, ErrNotFound) {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	for ; ; step++ {
		fmt.Println("saving", step)
		if _, err := s.Save(testState(step, crashN)); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("saved", step)
		if err := s.MarkCommitted(step); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if _, err := s.Prune(3, 0); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
	}
}

// startChild starts the test binary in role on path and returns it with its stdout lines.
func startChild(t *testing.T, role, path string) (*exec.Cmd, io.WriteCloser, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role, childPathEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, stdin, lines
}

func waitReady(t *testing.T, lines <-chan string) {
	t.Helper()
	select {
	case l := <-lines:
		if l != "ready" {
			t.Fatalf("child said %q", l)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child not ready after 20 s")
	}
}

func TestLockTimeoutNamesHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	cmd, stdin, lines := startChild(t, "hold", path)
	waitReady(t, lines)

	for _, ro := range []bool{false, true} {
		start := time.Now()
		_, err := Open(path, Options{ReadOnly: ro})
		elapsed := time.Since(start)
		var iu *InUseError
		if !errors.As(err, &iu) || !errors.Is(err, ErrInUse) {
			t.Fatalf("Open(readOnly=%v) while another process holds the file: %v", ro, err)
		}
		want := fmt.Sprintf("checkpoint: %s in use by process %d", path, cmd.Process.Pid)
		if err.Error() != want || iu.PID != cmd.Process.Pid {
			t.Fatalf("error %q, want %q", err, want)
		}
		if elapsed < 900*time.Millisecond || elapsed > 3*time.Second {
			t.Fatalf("gave up after %v, want about DefaultLockTimeout (1 s)", elapsed)
		}
	}
	// When the holder goes, the file opens.
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestLockHolderFromSidecar(t *testing.T) {
	// With no lock on the file, /proc/locks says nothing and the sidecar names the holder.
	path := filepath.Join(t.TempDir(), "c.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".pid", []byte("4242\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if pid := lockHolder(path); pid != 4242 {
		t.Fatalf("lockHolder = %d, want 4242", pid)
	}
	// A read-write store writes its own pid and removes it on Close.
	p2 := filepath.Join(t.TempDir(), "d.db")
	s, err := Open(p2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p2 + ".pid"); strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("sidecar holds %q", b)
	}
	if pid := lockHolder(p2); pid != os.Getpid() {
		t.Fatalf("lockHolder of our own open store = %d", pid)
	}
	s.Close()
	if _, err := os.Stat(p2 + ".pid"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sidecar left after Close: %v", err)
	}
}

// TestCrashSafety SIGKILLs a saving child at random moments, many times; after every kill
// the file must open, every checkpoint in it must verify, and LatestVerified must be the
// exact state of the newest save that finished.
func TestCrashSafety(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	src := rng.New(20260, 1) // the kill schedule; timing itself is the OS's
	budget, minKills := 20*time.Second, 20
	if testing.Short() {
		budget, minKills = 5*time.Second, 3
	}
	// The budget is a minimum, not a limit on what the test needs: a slow machine goes on past
	// it until it has its kills, one during a save and one finished save (each cycle starts a
	// process, so how many fit in 20 s is the machine's speed). hang bounds it.
	deadline, hang := time.Now().Add(budget), time.Now().Add(5*time.Minute)
	kills, midSave, newest := 0, 0, int64(0)
	for kills < 200 && time.Now().Before(hang) && (time.Now().Before(deadline) || kills < minKills || midSave == 0 || newest == 0) {
		cmd, _, lines := startChild(t, "saveloop", path)
		waitReady(t, lines)
		time.Sleep(time.Duration(src.Intn(300_000)) * time.Microsecond)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		kills++
		var last string
		for l := range lines {
			if strings.HasPrefix(l, "error") {
				t.Fatalf("child: %s", l)
			}
			last = l
		}
		if strings.HasPrefix(last, "saving") {
			midSave++
		}

		s, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("after kill %d: Open: %v", kills, err)
		}
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range list {
			if err := s.Verify(in.Step); err != nil {
				t.Fatalf("after kill %d: %v", kills, err)
			}
		}
		c, err := s.LatestVerified()
		switch {
		case errors.Is(err, ErrNotFound) && newest == 0:
		case err != nil:
			t.Fatalf("after kill %d: LatestVerified: %v", kills, err)
		default:
			if c.Step < newest {
				t.Fatalf("after kill %d: newest checkpoint went back from %d to %d", kills, newest, c.Step)
			}
			newest = c.Step
			assertSame(t, c, testState(c.Step, crashN))
		}
		s.Close()
	}
	t.Logf("%d kills (%d between a save's start and its end), newest step %d", kills, midSave, newest)
	if kills < minKills || midSave == 0 || newest == 0 {
		t.Fatalf("too few kills (%d), none during a save (%d), or no save finished (%d)", kills, midSave, newest)
	}
}
