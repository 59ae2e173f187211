package localrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the child: LOCALRUN_CHILD selects what it does.
func TestMain(m *testing.M) {
	switch os.Getenv("LOCALRUN_CHILD") {
	case "":
		os.Exit(m.Run())
	case "print":
		fmt.Println("hello")
		fmt.Fprintln(os.Stderr, "to stderr")
		os.Exit(0)
	case "term": // waits for SIGTERM, says so, exits 0
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		fmt.Println("got SIGTERM")
		os.Exit(0)
	case "ignore-term": // must be SIGKILLed
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		time.Sleep(time.Minute)
	case "fail-once": // exits 3 the first time, 0 the second
		marker := os.Getenv("MARKER")
		if _, err := os.Stat(marker); err != nil {
			os.WriteFile(marker, nil, 0o644)
			fmt.Println("failing")
			os.Exit(3)
		}
		fmt.Println("succeeding")
		os.Exit(0)
	}
}

type lines struct {
	mu sync.Mutex
	m  map[string][]string
}

func (l *lines) add(name string, b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]string{}
	}
	l.m[name] = append(l.m[name], strings.TrimSpace(string(b)))
}

func (l *lines) get(name string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.m[name]...)
}

func newSup(t *testing.T) (*Supervisor, *lines, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := New(exe, filepath.Join(dir, "logs"))
	if err != nil {
		t.Fatal(err)
	}
	l := &lines{}
	s.Line = l.add
	t.Cleanup(func() { s.Close(time.Second) })
	return s, l, dir
}

func waitLine(t *testing.T, l *lines, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range l.get(name) {
			if s == want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never printed %q; got %q", name, want, l.get(name))
}

func TestFreePortsAreDistinctAndUsable(t *testing.T) {
	ports, err := FreePorts(6)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: bad or repeated", ports)
		}
		seen[p] = true
	}
}

func TestLinesReachLogAndCallback(t *testing.T) {
	s, l, dir := newSup(t)
	if err := s.Start(Spec{Name: "p", Env: []string{"LOCALRUN_CHILD=print"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(context.Background(), "p"); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	got := l.get("p")
	if len(got) != 2 || got[0] != "hello" && got[1] != "hello" {
		t.Fatalf("callback lines %q, want hello and to stderr", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "logs", "p.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "hello\n") || !strings.Contains(string(b), "to stderr\n") {
		t.Fatalf("log holds %q", b)
	}
	if err := s.Wait(context.Background(), "nope"); !errors.Is(err, ErrUnknownProcess) {
		t.Fatalf("Wait(unknown) = %v", err)
	}
}

func TestStopSendsTermThenKill(t *testing.T) {
	s, l, _ := newSup(t)
	s.Start(Spec{Name: "polite", Env: []string{"LOCALRUN_CHILD=term"}, Restart: 5})
	s.Start(Spec{Name: "stubborn", Env: []string{"LOCALRUN_CHILD=ignore-term"}, Restart: 5})
	waitLine(t, l, "polite", "ready")
	waitLine(t, l, "stubborn", "ready")
	if err := s.Stop("polite", 5*time.Second); err != nil {
		t.Fatalf("polite child: %v", err)
	}
	waitLine(t, l, "polite", "got SIGTERM")
	start := time.Now()
	err := s.Stop("stubborn", 300*time.Millisecond)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("stubborn child: err %v, want killed by SIGKILL", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Stop took %v", d)
	}
	if s.Pid("stubborn") != 0 || s.Pid("polite") != 0 {
		t.Fatal("a stopped child was restarted")
	}
}

func TestRestartAfterFailureAndKill(t *testing.T) {
	s, l, dir := newSup(t)
	marker := filepath.Join(dir, "marker")
	s.Start(Spec{Name: "f", Env: []string{"LOCALRUN_CHILD=fail-once", "MARKER=" + marker}, Restart: 1})
	if err := s.Wait(context.Background(), "f"); err != nil {
		t.Fatalf("after one restart the child should succeed: %v", err)
	}
	if got := l.get("f"); len(got) != 2 || got[0] != "failing" || got[1] != "succeeding" {
		t.Fatalf("lines %q", got)
	}
	first := <-s.Exits()
	if first.Name != "f" || !first.Restarting || first.Err == nil {
		t.Fatalf("first exit %+v", first)
	}

	// kill -9 from outside the supervisor's Stop: restarted.
	const delay = 400 * time.Millisecond
	s.Start(Spec{Name: "k", Env: []string{"LOCALRUN_CHILD=term"}, Restart: 1, RestartDelay: delay})
	waitLine(t, l, "k", "ready")
	pid := s.Pid("k")
	killed := time.Now()
	if err := s.Signal("k", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	sawDown := false
	for s.Pid("k") == 0 || s.Pid("k") == pid {
		sawDown = sawDown || s.Pid("k") == 0
		if time.Now().After(deadline) {
			t.Fatal("killed child was not restarted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(killed); !sawDown || d < delay {
		t.Fatalf("restarted after %v (down seen: %v), want a pause of at least %v", d, sawDown, delay)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "logs", "k.pid"))
	if strings.TrimSpace(string(b)) != fmt.Sprint(s.Pid("k")) {
		t.Fatalf("pid file %q, running pid %d", b, s.Pid("k"))
	}
	if err := s.Start(Spec{Name: "k"}); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Start: %v", err)
	}
}
