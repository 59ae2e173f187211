package localrun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
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
	case "listen": // listens on 127.0.0.1:LISTEN_PORT, says "ready", closes after HOLD (or a minute)
		l, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("LISTEN_PORT"))
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("ready")
		hold, err := time.ParseDuration(os.Getenv("HOLD"))
		if err != nil {
			hold = time.Minute
		}
		time.Sleep(hold)
		l.Close()
		os.Exit(0)
	case "claim": // ClaimPorts of trainer-0's listen port LISTEN_PORT for WAIT: its lines, then its error
		port, _ := strconv.Atoi(os.Getenv("LISTEN_PORT"))
		wait, _ := time.ParseDuration(os.Getenv("WAIT"))
		m := Manifest{ConfigHash: "h", Coordinators: 1, Trainers: 1, TrainerPorts: []TrainerPorts{{Listen: port}}}
		err := m.ClaimPorts(os.Getenv("DIR"), wait, func(s string) { fmt.Println("said:", s) })
		fmt.Println("error:", err, errors.Is(err, ErrPortHeld))
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
	case "script": // start number n (counted in COUNTER) does the n-th step of SCRIPT
		counter := os.Getenv("COUNTER")
		b, _ := os.ReadFile(counter)
		n := len(b)
		os.WriteFile(counter, append(b, 'x'), 0o644)
		steps := strings.Split(os.Getenv("SCRIPT"), ",")
		switch steps[n] {
		case "fail": // a start-up failure
			fmt.Printf("cannot start: attempt %d\n", n+1)
			os.Exit(1)
		case "bad": // refused input
			fmt.Println("bad input")
			os.Exit(2)
		case "kill": // killed from outside before it was ready
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			time.Sleep(time.Minute)
		case "ready-fail": // a crash after a good start
			fmt.Println("ready")
			os.Exit(1)
		case "ready-slow-fail": // a crash 300 ms after a good start
			fmt.Println("ready")
			time.Sleep(300 * time.Millisecond)
			os.Exit(1)
		case "ready-bad":
			fmt.Println("ready")
			os.Exit(2)
		case "ready-panic": // a good start, then a panic on another goroutine (the runtime's status 2)
			fmt.Println("ready")
			go func() { panic("injected on a worker") }()
			time.Sleep(time.Minute)
		case "ready-bug": // a good start, then a panic recovered as ddpm's main does (status 70)
			fmt.Println("ready")
			fmt.Fprintf(os.Stderr, "panic: injected in a command\n\n%s\n", debug.Stack())
			fmt.Fprintln(os.Stderr, "ddpm: internal error (a bug in ddpm, not in your input): injected in a command; its stack trace is above; please report it with the trace")
			os.Exit(70)
		case "ok":
			fmt.Println("ready")
			os.Exit(0)
		case "quit": // a good start, then status 0 without saying it is done (stopped from outside)
			fmt.Println("ready")
			os.Exit(0)
		case "done": // a good start, its work done, status 0
			fmt.Println("ready")
			fmt.Println("done")
			os.Exit(0)
		}
		os.Exit(99)
	case "lock": // holds the run directory DIR
		l, err := Lock(os.Getenv("DIR"))
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		defer l.Release()
		fmt.Println("locked")
		time.Sleep(time.Minute)
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

// scripted starts a "script" child named "s" that takes the steps of script, one per start.
func scripted(t *testing.T, s *Supervisor, dir, script string, sp Spec) string {
	t.Helper()
	counter := filepath.Join(dir, "counter")
	sp.Name, sp.Env = "s", []string{"LOCALRUN_CHILD=script", "SCRIPT=" + script, "COUNTER=" + counter}
	sp.Ready = func(line []byte) bool { return string(line) == "ready\n" }
	if err := s.Start(sp); err != nil {
		t.Fatal(err)
	}
	return counter
}

func starts(t *testing.T, counter string) int {
	t.Helper()
	b, err := os.ReadFile(counter)
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func drain(s *Supervisor) []Exit {
	var out []Exit
	for {
		select {
		case e := <-s.Exits():
			out = append(out, e)
		default:
			return out
		}
	}
}

// A process that fails at start-up StartAttempts times in a row is not restarted again, however
// many restarts Restart would still allow; the last report says so with the process's last line.
func TestGiveUpAfterFailedStarts(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "fail,fail,fail,ok", Spec{Restart: 10, StartAttempts: 3})
	err := s.Wait(context.Background(), "s")
	var ee *exec.ExitError
	var se *StartError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !errors.As(err, &se) || se.FailedStarts != 3 || se.Name != "s" {
		t.Fatalf("Wait = %v, want a StartError of 3 starts with exit status 1", err)
	}
	if want := "localrun: s failed 3 times at start-up (exit status 1): cannot start: attempt 3"; err.Error() != want {
		t.Fatalf("Wait = %q, want %q", err, want)
	}
	if n := starts(t, counter); n != 3 {
		t.Fatalf("started %d times, want 3", n)
	}
	exits := drain(s)
	if len(exits) != 3 || !exits[0].Restarting || !exits[1].Restarting || exits[1].GaveUp {
		t.Fatalf("exits %+v", exits)
	}
	if last := exits[2]; last.Restarting || !last.GaveUp || last.FailedStarts != 3 || last.LastLine != "cannot start: attempt 3" {
		t.Fatalf("last exit %+v, want gave up after 3 failed starts with the last line", last)
	}
	if s.Pid("s") != 0 {
		t.Fatal("running after giving up")
	}
}

// FatalStatus ends a process at its first start-up failure with that status; after a good start
// the same status is a crash like any other and the process is restarted.
func TestFatalStatusAtStartUp(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "bad,ok", Spec{Restart: 10, StartAttempts: 3, FatalStatus: 2})
	if err := s.Wait(context.Background(), "s"); err == nil {
		t.Fatal("Wait = nil, want exit status 2")
	}
	if n := starts(t, counter); n != 1 {
		t.Fatalf("started %d times, want 1", n)
	}
	if e := drain(s); len(e) != 1 || !e[0].GaveUp || e[0].Restarting || e[0].FailedStarts != 1 || e[0].LastLine != "bad input" {
		t.Fatalf("exits %+v", e)
	}

	s2, _, dir2 := newSup(t)
	counter = scripted(t, s2, dir2, "ready-bad,ok", Spec{Restart: 10, StartAttempts: 3, FatalStatus: 2})
	if err := s2.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("a status-2 crash after start-up was not restarted: %v", err)
	}
	if n := starts(t, counter); n != 2 {
		t.Fatalf("started %d times, want 2", n)
	}
}

// The failed-start rule cannot end a process that recovers from crashes: a kill by a signal
// neither counts nor breaks the series, and a good start (Ready) begins a new series.
func TestCrashRecoveryIsNotAFailedStart(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "fail,fail,kill,ready-fail,fail,fail,ok", Spec{Restart: 10, StartAttempts: 3})
	if err := s.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("Wait = %v, want the last start's success", err)
	}
	if n := starts(t, counter); n != 7 {
		t.Fatalf("started %d times, want 7", n)
	}
	for _, e := range drain(s) {
		if e.GaveUp {
			t.Fatalf("gave up: %+v", e)
		}
	}
}

// Restarts count against Spec.Restart within Spec.RestartWindow only: a process whose
// crashes are further apart than the window is restarted every time, and without a window the
// same crashes run out of restarts.
func TestRestartWindowForgetsOldRestarts(t *testing.T) {
	const script = "ready-slow-fail,ready-slow-fail,ready-slow-fail,ok"
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, script, Spec{Restart: 1, RestartWindow: 200 * time.Millisecond})
	if err := s.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("with a 200 ms window: Wait = %v, want the fourth start's success", err)
	}
	if n := starts(t, counter); n != 4 {
		t.Fatalf("with a 200 ms window: started %d times, want 4 (crashes 300 ms apart)", n)
	}

	s2, _, dir2 := newSup(t)
	counter = scripted(t, s2, dir2, script, Spec{Restart: 1})
	if err := s2.Wait(context.Background(), "s"); err == nil {
		t.Fatal("without a window: Wait = nil, want the second crash's error")
	}
	if n := starts(t, counter); n != 2 {
		t.Fatalf("without a window: started %d times, want 2 (one restart)", n)
	}
}

// With Spec.Finished, a status-0 exit without the finished line (a SIGTERM from outside) is
// restarted like a crash, and one after it is final; without Finished, status 0 is final.
func TestExitWithoutFinishingIsRestarted(t *testing.T) {
	s, _, dir := newSup(t)
	done := func(line []byte) bool { return string(line) == "done\n" }
	counter := scripted(t, s, dir, "quit,quit,done,ok", Spec{Restart: 10, Finished: done})
	if err := s.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("Wait = %v, want the finished start's success", err)
	}
	if n := starts(t, counter); n != 3 {
		t.Fatalf("started %d times, want 3 (two unfinished exits restarted, then done)", n)
	}
	var restarting int
	for _, e := range drain(s) {
		if e.Restarting {
			restarting++
			if e.Err != nil {
				t.Errorf("unfinished exit reported with error %v, want status 0", e.Err)
			}
		}
	}
	if restarting != 2 {
		t.Fatalf("%d exits reported as restarting, want 2", restarting)
	}

	s2, _, dir2 := newSup(t)
	counter = scripted(t, s2, dir2, "quit,ok", Spec{Restart: 10})
	if err := s2.Wait(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	if n := starts(t, counter); n != 1 {
		t.Fatalf("without Finished: started %d times, want 1", n)
	}
}

// Lock names the live holder of a run directory, and a holder killed with SIGKILL leaves a file
// that does not block the next run.
func TestLockNamesHolderAndDiesWithIt(t *testing.T) {
	s, l, dir := newSup(t)
	if err := s.Start(Spec{Name: "holder", Env: []string{"LOCALRUN_CHILD=lock", "DIR=" + dir}}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, l, "holder", "locked")
	pid := s.Pid("holder")
	_, err := Lock(dir)
	if want := fmt.Sprintf("%s is already running (pid %d)", dir, pid); !errors.Is(err, ErrRunning) || err.Error() != want {
		t.Fatalf("Lock while held = %v, want %q", err, want)
	}
	if err := s.Signal("holder", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(context.Background(), "holder"); err == nil {
		t.Fatal("killed holder exited 0")
	}
	lk, err := Lock(dir)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LockFile))
	if strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("%s holds %q, want this process's pid %d", LockFile, b, os.Getpid())
	}
	if err := lk.Release(); err != nil {
		t.Fatal(err)
	}
	lk, err = Lock(dir)
	if err != nil {
		t.Fatalf("Lock after Release: %v", err)
	}
	lk.Release()
}

// FatalAnyTime: the fatal status ends the process after a good start too, as a *StartError
// with no failed starts and the process's last line.
func TestFatalStatusAnyTime(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "ready-bad,ok", Spec{Restart: 10, StartAttempts: 3, FatalStatus: 2, FatalAnyTime: true})
	err := s.Wait(context.Background(), "s")
	var se *StartError
	if !errors.As(err, &se) || se.FailedStarts != 0 || se.LastLine != "ready" || err.Error() != "localrun: s failed after starting up (exit status 2): ready" {
		t.Fatalf("Wait = %v, want a StartError after a good start", err)
	}
	if n := starts(t, counter); n != 1 {
		t.Fatalf("started %d times, want 1", n)
	}
	if e := drain(s); len(e) != 1 || !e[0].GaveUp || e[0].Restarting || e[0].RestartsSpent {
		t.Fatalf("exits %+v", e)
	}
}

// A process that fails once more after its restarts are spent ends with a *RestartsSpentError
// counting its failures within the window, and its last exit is reported as RestartsSpent.
func TestRestartsSpent(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "ready-fail,ready-fail,ready-fail,ok", Spec{Restart: 2, RestartWindow: time.Minute})
	err := s.Wait(context.Background(), "s")
	var re *RestartsSpentError
	if !errors.As(err, &re) || re.Failures != 3 || re.Window != time.Minute || re.LastLine != "ready" ||
		err.Error() != "localrun: s failed 3 times in 1m0s; not restarted again: exit status 1" {
		t.Fatalf("Wait = %v, want the RestartsSpentError of 3 failures", err)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("Wait = %v does not unwrap to the exit status", err)
	}
	if n := starts(t, counter); n != 3 {
		t.Fatalf("started %d times, want 3", n)
	}
	e := drain(s)
	if len(e) != 3 || !e[0].Restarting || !e[1].Restarting || e[2].Restarting || !e[2].RestartsSpent || e[2].Failures != 3 || e[0].RestartsSpent {
		t.Fatalf("exits %+v", e)
	}
}

// TestPidFileOnlyWhileRunning: LogDir/NAME.pid names the running process and is gone while it
// is down (the restart delay) and after it ended: a killed child's pid stayed in the file until
// its restart, so `kill $(cat NAME.pid)` reached no process, or a stranger given that pid.
func TestPidFileOnlyWhileRunning(t *testing.T) {
	s, l, dir := newSup(t)
	pidFile := filepath.Join(dir, "logs", "k.pid")
	const delay = 400 * time.Millisecond
	if err := s.Start(Spec{Name: "k", Env: []string{"LOCALRUN_CHILD=term"}, Restart: 1, RestartDelay: delay}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, l, "k", "ready")
	first := s.Pid("k")
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != fmt.Sprint(first) {
		t.Fatalf("pid file %q, running pid %d", b, first)
	}
	if err := s.Signal("k", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Pid("k") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the killed child never showed as down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, err := os.ReadFile(pidFile); !errors.Is(err, os.ErrNotExist) && s.Pid("k") == 0 {
		t.Fatalf("during the restart delay the pid file holds %q (err %v), want none", b, err)
	}
	for s.Pid("k") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the killed child was not restarted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := s.Pid("k")
	if b, _ := os.ReadFile(pidFile); second == first || strings.TrimSpace(string(b)) != fmt.Sprint(second) {
		t.Fatalf("after the restart: pid file %q, pids %d then %d", b, first, second)
	}
	_ = s.Stop("k", 5*time.Second) // the restarted child may not handle SIGTERM yet: its status is no matter here
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Stop the pid file is still there (%v)", err)
	}
}
