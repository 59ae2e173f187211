// Package localrun runs a whole training cluster on one machine as real child processes of the
// ddpm binary (DESIGN.md section 8): it picks free loopback ports, starts and restarts the
// children, keeps each one's log in the run directory, passes their lines to the terminal with a
// name prefix, and stops them cleanly.
//
// The supervisor knows nothing about DDPM; the `ddpm local` command decides which processes to
// start and what their lines mean.
package localrun

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors returned by the supervisor.
var (
	// ErrUnknownProcess: a name that was never started.
	ErrUnknownProcess = errors.New("localrun: unknown process")
	// ErrAlreadyRunning: Start of a name whose process is still running.
	ErrAlreadyRunning = errors.New("localrun: process already running")
)

// FreePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago. All n
// listeners are held open together so the kernel cannot hand out the same port twice; they are
// closed before returning, so another program could still take one in between (the usual race of
// this technique, harmless on a developer machine).
func FreePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("localrun: finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Spec describes one child process.
type Spec struct {
	// Name identifies the process ("coordinator-0", "trainer-1"); it prefixes its terminal lines
	// and names its log file (LogDir/Name.log) and pid file (LogDir/Name.pid).
	Name string
	// Args are the arguments after the executable.
	Args []string
	// Env is added to the supervisor's own environment.
	Env []string
	// DropEnv names variables of the supervisor's environment the process does not get (ddpm
	// local drops the DDPM_<FLAG> variables of ddpm coordinator's and ddpm trainer's flags: the
	// run's settings are its own, not whatever its user's shell exports).
	DropEnv []string
	// Restart, when positive, restarts the process up to this many times if it exits with an
	// error or by a signal the supervisor did not send (as a Kubernetes StatefulSet would):
	// this many within any RestartWindow, or over the process's whole life when RestartWindow
	// is 0. A window lets a long run survive a crash now and then, while a process that keeps
	// crashing still runs out of restarts.
	Restart int
	// RestartWindow, when positive, is the period over which restarts count against Restart;
	// restarts longer ago are forgotten.
	RestartWindow time.Duration
	// RestartDelay is how long a failed process stays down before its restart (a crash-loop
	// backoff; it also lets the cluster notice the loss before the process returns).
	RestartDelay time.Duration

	// Ready, when set, recognises the line by which a process shows that it has started up
	// properly (a trainer's first progress report, a coordinator's "started" line). Until such
	// a line, the process is starting up; nil: every process is starting up until it exits.
	Ready func(line []byte) bool
	// Finished, when set, recognises the line by which a process says its work is done (a
	// trainer's "run complete"). An exit with status 0 after such a line is final; without one
	// (the process was stopped from outside, by a SIGTERM the supervisor did not send) it is
	// restarted like a crash, as Kubernetes restarts a StatefulSet's pod whatever its status.
	// nil: status 0 is always final.
	Finished func(line []byte) bool
	// StartAttempts, when positive, is how many failed starts in a row end the process for good:
	// a start fails when the process exits with a non-zero status before Ready matched one of its
	// lines. An exit by a signal (a kill from outside, the OOM killer) neither counts nor breaks
	// the series, and a process that became ready starts a new one, so a process that crashes
	// mid-run is restarted as often as Restart allows whatever this says.
	StartAttempts int
	// FatalStatus, when positive, is an exit status that ends the process for good when it
	// exits with it while starting up (the status of refused input, which no restart will fix).
	// A Go runtime crash is never taken for it, although the runtime exits 2 (see Exit.Crash).
	FatalStatus int
	// FatalAnyTime extends FatalStatus to the whole life of the process: an exit with that
	// status after a good start ends it for good too (for a process whose status means refused
	// input whenever it comes, such as a trainer whose dataset turns out damaged mid-run).
	FatalAnyTime bool
	// Liveness, when set, probes the process as a kubelet's liveness probe does and kills it
	// with SIGKILL when it stops answering (see Liveness); the kill is then restarted like a
	// crash, as Restart allows. nil: no probe.
	Liveness *Liveness
}

// Exit reports that a child ended: its name, the error from Wait (nil for status 0), and whether
// the supervisor is about to restart it.
type Exit struct {
	Name       string
	Err        error
	Restarting bool
	// GaveUp: the process failed at start-up as its Spec's StartAttempts or FatalStatus say it
	// may not; it is not restarted. FailedStarts counts the failed starts in a row (this one
	// included) and LastLine is the last line the process wrote, without its newline (usually
	// the reason it gave).
	GaveUp       bool
	FailedStarts int
	LastLine     string
	// RestartsSpent: the process failed again after Spec.Restart restarts within
	// Spec.RestartWindow; it is not restarted (Wait returns a *RestartsSpentError). Failures
	// counts those failures, this one included.
	RestartsSpent bool
	Failures      int
	// Crash is the first line of a Go crash report ("panic: ..." or "fatal error: ...", followed
	// by its "goroutine N [...]" trace) when the process ended with a failure status after
	// writing one: the runtime's status 2 (a panic off the goroutine main recovers on, an nn pool
	// worker's or a gRPC handler's; a fatal runtime error), or ddpm's 70 (a panic its main
	// recovered, printing the report itself). Such an exit is a crash, restarted as Restart
	// allows, never taken for FatalStatus, and LastLine is this line (the trace's last line names
	// only a source offset, ddpm's own last line points at a trace "above" in the log). "" for
	// any other exit.
	Crash string
}

// StartError is Wait's error for a process the supervisor gave up on at start-up (see
// Spec.StartAttempts, Spec.FatalStatus), or later with Spec.FatalAnyTime. It unwraps to the last exit's *exec.ExitError.
type StartError struct {
	Name         string
	FailedStarts int    // failed starts in a row; 0: it failed after a good start (Spec.FatalAnyTime)
	LastLine     string // the last line the process wrote
	Err          error  // the last exit's error
}

func (e *StartError) Error() string {
	if e.FailedStarts == 0 {
		return fmt.Sprintf("localrun: %s failed after starting up (%v): %s", e.Name, e.Err, e.LastLine)
	}
	return fmt.Sprintf("localrun: %s failed %d times at start-up (%v): %s", e.Name, e.FailedStarts, e.Err, e.LastLine)
}

func (e *StartError) Unwrap() error { return e.Err }

// RestartsSpentError is Wait's error for a process that failed once more after Spec.Restart
// restarts within Spec.RestartWindow (over its whole life when the window is 0). It unwraps to
// the last exit's error (*exec.ExitError; nil for status 0 without Spec.Finished's line).
type RestartsSpentError struct {
	Name     string
	Failures int           // failures within Window: the restarts and the last one
	Window   time.Duration // Spec.RestartWindow
	LastLine string        // the last line the process wrote
	Err      error         // the last exit's error
}

func (e *RestartsSpentError) Error() string {
	return fmt.Sprintf("localrun: %s failed %d times in %v; not restarted again: %s", e.Name, e.Failures, e.Window, e.cause())
}

// cause words the last exit: its error, or that it exited with status 0 unfinished.
func (e *RestartsSpentError) cause() string {
	if e.Err == nil {
		return "status 0 before its work was done"
	}
	return e.Err.Error()
}

func (e *RestartsSpentError) Unwrap() error { return e.Err }

// Supervisor owns a set of named child processes of one executable.
type Supervisor struct {
	exe    string
	logDir string
	// Line is called for every line a child writes (stdout and stderr), after it went to the
	// child's log file. It must be safe for concurrent use; nil drops the lines.
	Line func(name string, line []byte)
	// Unresponsive, when set, is called once for each process a liveness probe (Spec.Liveness)
	// is about to kill, just before the SIGKILL, so that its line comes before the exit's
	// report. It is called with the supervisor's lock held: it must not call the Supervisor.
	Unresponsive func(Unresponsive)

	mu    sync.Mutex
	procs map[string]*proc
	exits chan Exit
	wg    sync.WaitGroup
}

type proc struct {
	spec     Spec
	cmd      *exec.Cmd
	done     chan struct{} // closed when the current process has been reaped
	stopping bool          // the supervisor asked it to stop: no restart
	restarts []time.Time   // when it was restarted, oldest first (within Spec.RestartWindow)
	// cancelRestart is closed by Stop to cut a pending restart delay short.
	cancelRestart chan struct{}
	exited        bool                // the current process has been reaped (it may be waiting to restart)
	failedStarts  int                 // failed starts in a row (Spec.StartAttempts)
	startErr      *StartError         // set when the supervisor gave up on it
	spentErr      *RestartsSpentError // set when it failed with its restarts spent
}

// incarnation is what the line reader learns about one run of a process; the exit handler reads
// it after the reader is done.
type incarnation struct {
	ready    bool   // Spec.Ready matched a line
	finished bool   // Spec.Finished matched a line
	last     string // the last non-empty line
	// header is the first "panic: " or "fatal error: " line, and traced says a "goroutine N ["
	// line came after it: the Go runtime's crash report (Exit.Crash).
	header string
	traced bool
	// readied is closed when Spec.Ready matches a line (the liveness probe's start-up ends).
	readied chan struct{}
}

// runtimeCrash is the first line of the Go crash report that inc wrote, when it then ended with
// a failure status (Exit.Crash): the runtime's 2, or the status a program that recovers the panic
// and prints the report itself chooses (ddpm's 70); "" otherwise.
func runtimeCrash(inc *incarnation, cmd *exec.Cmd) string {
	if !inc.traced || cmd.ProcessState == nil || cmd.ProcessState.ExitCode() <= 0 {
		return ""
	}
	return inc.header
}

// New returns a supervisor that starts exe (usually os.Executable()) and keeps logs under logDir,
// which it creates.
func New(exe, logDir string) (*Supervisor, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	return &Supervisor{exe: exe, logDir: logDir, procs: map[string]*proc{}, exits: make(chan Exit, 64)}, nil
}

// Exits delivers one Exit per child ending, restarts included. Nobody has to read it; when its
// buffer is full older reports are dropped rather than blocking the supervisor.
func (s *Supervisor) Exits() <-chan Exit { return s.exits }

// Start launches the process sp describes. Its log file is appended to, so a restarted or resumed
// process continues the same file.
func (s *Supervisor) Start(sp Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.procs[sp.Name]; ok && !isDone(p.done) {
		return fmt.Errorf("%w: %s", ErrAlreadyRunning, sp.Name)
	}
	p := &proc{spec: sp, cancelRestart: make(chan struct{})}
	s.procs[sp.Name] = p
	return s.launch(p)
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// environWithout is this process's environment less the variables named in drop.
func environWithout(drop []string) []string {
	env := os.Environ()
	if len(drop) == 0 {
		return env
	}
	kept := env[:0:0]
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, name) {
			kept = append(kept, kv)
		}
	}
	return kept
}

// launch starts p's process; s.mu is held.
func (s *Supervisor) launch(p *proc) error {
	logf, err := os.OpenFile(filepath.Join(s.logDir, p.spec.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.exe, p.spec.Args...)
	cmd.Env = append(environWithout(p.spec.DropEnv), p.spec.Env...)
	// A process group of its own: the terminal's Ctrl-C reaches only the supervisor, which then
	// stops the children in order (trainers before coordinators). Should the supervisor die
	// without doing so, the kernel sends its children SIGTERM (Pdeathsig): no orphans.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw, err := os.Pipe()
	if err != nil {
		logf.Close()
		return err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		logf.Close()
		pr.Close()
		pw.Close()
		return fmt.Errorf("localrun: starting %s: %w", p.spec.Name, err)
	}
	pw.Close()
	pidFile := filepath.Join(s.logDir, p.spec.Name+".pid")
	_ = os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	p.cmd, p.exited = cmd, false
	p.done = make(chan struct{})
	done := p.done
	copied := make(chan struct{})
	reaped := make(chan struct{}) // closed once this incarnation has been reaped
	inc := &incarnation{readied: make(chan struct{})}
	if p.spec.Liveness != nil {
		go s.watch(p, cmd, inc.readied, reaped)
	}
	s.wg.Add(1)
	go func() {
		defer close(copied)
		defer logf.Close()
		defer pr.Close()
		s.copyLines(p.spec, inc, pr, logf)
	}()
	go func() {
		defer s.wg.Done()
		<-copied // all output is in the log before anyone hears of the exit
		err := cmd.Wait()
		close(reaped)
		// The pid file names a running process only: a dead one's pid, kept through the restart
		// delay or after the end, sent `kill $(cat NAME.pid)` to nothing, or to whatever process
		// the kernel gave that pid next.
		_ = os.Remove(pidFile)
		s.mu.Lock()
		p.exited = true
		crash := runtimeCrash(inc, cmd)
		last := inc.last
		if crash != "" {
			last = crash
		}
		gaveUp := s.judgeStart(p, inc, cmd, err, crash != "")
		unfinished := err != nil || (p.spec.Finished != nil && !inc.finished)
		now := time.Now()
		if w := p.spec.RestartWindow; w > 0 {
			for len(p.restarts) > 0 && now.Sub(p.restarts[0]) > w {
				p.restarts = p.restarts[1:]
			}
		}
		restart := unfinished && !p.stopping && !gaveUp && len(p.restarts) < p.spec.Restart
		spent := unfinished && !p.stopping && !gaveUp && p.spec.Restart > 0 && !restart
		if restart {
			p.restarts = append(p.restarts, now)
		}
		if gaveUp {
			p.startErr = &StartError{Name: p.spec.Name, FailedStarts: p.failedStarts, LastLine: last, Err: err}
		}
		e := Exit{Name: p.spec.Name, Err: err, Restarting: restart, GaveUp: gaveUp, FailedStarts: p.failedStarts, LastLine: last, RestartsSpent: spent, Crash: crash}
		if spent {
			p.spentErr = &RestartsSpentError{Name: p.spec.Name, Failures: len(p.restarts) + 1, Window: p.spec.RestartWindow, LastLine: last, Err: err}
			e.Failures = p.spentErr.Failures
		}
		s.report(e)
		if !restart {
			close(done)
			s.mu.Unlock()
			return
		}
		// Still "running" for Wait while it waits to restart; Stop cancels the restart.
		s.mu.Unlock()
		select {
		case <-time.After(p.spec.RestartDelay):
		case <-p.cancelRestart:
		}
		s.mu.Lock()
		close(done)
		if !p.stopping {
			if lerr := s.launch(p); lerr != nil {
				s.report(Exit{Name: p.spec.Name, Err: lerr})
			}
		}
		s.mu.Unlock()
	}()
	return nil
}

// judgeStart updates p's series of failed starts after the incarnation inc ended with err, and
// says whether the supervisor gives up on p (see Spec.StartAttempts, Spec.FatalStatus); crashed:
// it ended in a Go runtime crash, whose status is no refusal. s.mu is held.
func (s *Supervisor) judgeStart(p *proc, inc *incarnation, cmd *exec.Cmd, err error, crashed bool) bool {
	if inc.ready {
		p.failedStarts = 0
	}
	if err == nil || p.stopping || cmd.ProcessState == nil {
		return false
	}
	status := cmd.ProcessState.ExitCode() // -1 when a signal ended it
	if status <= 0 {
		return false
	}
	fatal := p.spec.FatalStatus > 0 && status == p.spec.FatalStatus && !crashed
	if inc.ready {
		// A crash after a good start: final only for a status fatal at any time (the series
		// of failed starts stays at 0).
		return p.spec.FatalAnyTime && fatal
	}
	p.failedStarts++
	if fatal {
		return true
	}
	return p.spec.StartAttempts > 0 && p.failedStarts >= p.spec.StartAttempts
}

func (s *Supervisor) report(e Exit) {
	select {
	case s.exits <- e:
	default:
	}
}

// copyLines hands each line of r to s.Line, then writes it to the log file, and notes in inc
// whether the process became ready, its last line, and the Go runtime's crash report. s.Line
// comes first so that what the log holds has been handed on: ddpm local's loss.csv journal
// then holds every step of a trainer's log even when ddpm local is killed between the two.
func (s *Supervisor) copyLines(sp Spec, inc *incarnation, r io.Reader, logf io.Writer) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if s.Line != nil {
				s.Line(sp.Name, line)
			}
			logf.Write(line)
			if t := strings.TrimSpace(string(line)); t != "" {
				inc.last = t
				switch {
				case inc.header == "" && (strings.HasPrefix(t, "panic: ") || strings.HasPrefix(t, "fatal error: ")):
					inc.header = t
				case inc.header != "" && goroutineLine(t):
					inc.traced = true
				}
			}
			if !inc.ready && sp.Ready != nil && sp.Ready(line) {
				inc.ready = true
				close(inc.readied)
			}
			if !inc.finished && sp.Finished != nil && sp.Finished(line) {
				inc.finished = true
			}
		}
		if err != nil {
			return
		}
	}
}

// Pid returns the pid of name's current process, or 0 if it is not running.
func (s *Supervisor) Pid(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[name]
	if !ok || p.exited {
		return 0
	}
	return p.cmd.Process.Pid
}

// Wait blocks until name's process has ended and will not be restarted, or ctx ends. It returns
// the process's exit error (nil for status 0), as a *StartError when the supervisor gave up on it
// (Spec.StartAttempts, Spec.FatalStatus), as a *RestartsSpentError when it failed with its
// restarts spent.
func (s *Supervisor) Wait(ctx context.Context, name string) error {
	for {
		s.mu.Lock()
		p, ok := s.procs[name]
		if !ok {
			s.mu.Unlock()
			return fmt.Errorf("%w: %s", ErrUnknownProcess, name)
		}
		done, cmd := p.done, p.cmd
		s.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
		restarted, startErr, spentErr := p.done != done, p.startErr, p.spentErr
		s.mu.Unlock()
		if startErr != nil {
			return startErr
		}
		if spentErr != nil {
			return spentErr
		}
		if !restarted {
			return exitErr(cmd)
		}
	}
}

func exitErr(cmd *exec.Cmd) error {
	if cmd.ProcessState == nil || cmd.ProcessState.Success() {
		return nil
	}
	return &exec.ExitError{ProcessState: cmd.ProcessState}
}

// Signal sends sig to name's current process without changing its restart policy (tests use it
// to SIGKILL a trainer and watch the cluster heal).
func (s *Supervisor) Signal(name string, sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownProcess, name)
	}
	if p.exited {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Stop asks name's process to end with SIGTERM, waits up to grace, then SIGKILLs it. A stopped
// process is not restarted. It returns the process's exit error.
func (s *Supervisor) Stop(name string, grace time.Duration) error {
	s.mu.Lock()
	p, ok := s.procs[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrUnknownProcess, name)
	}
	if !p.stopping {
		close(p.cancelRestart)
	}
	p.stopping = true
	done, cmd := p.done, p.cmd
	if !p.exited {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	return exitErr(cmd)
}

// KillAll SIGKILLs every process still running, all at once, without the grace Stop gives (a
// second Ctrl-C to a stopping ddpm local), and marks every process stopped: none is restarted, a
// pending restart is cancelled, and Stop calls waiting on a killed process return as it is
// reaped. It returns the names of the processes it killed, sorted; nil when none was running.
// What a killed process had committed to disk stays (a bbolt transaction is all or nothing).
func (s *Supervisor) KillAll() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var killed []string
	for n, p := range s.procs {
		if !p.stopping {
			close(p.cancelRestart)
		}
		p.stopping = true
		if !p.exited && p.cmd.Process.Kill() == nil {
			killed = append(killed, n)
		}
	}
	slices.Sort(killed)
	return killed
}

// StopAll stops the named processes in order (each with Stop), then waits for every goroutine of
// the supervisor. Names that were never started are skipped.
func (s *Supervisor) StopAll(grace time.Duration, names ...string) {
	for _, n := range names {
		s.mu.Lock()
		_, ok := s.procs[n]
		s.mu.Unlock()
		if ok {
			_ = s.Stop(n, grace)
		}
	}
}

// Close stops every process still running (SIGTERM, then SIGKILL after grace) and waits for the
// supervisor's goroutines.
func (s *Supervisor) Close(grace time.Duration) {
	s.mu.Lock()
	names := make([]string, 0, len(s.procs))
	for n := range s.procs {
		names = append(names, n)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Stop(n, grace) }()
	}
	wg.Wait()
	s.wg.Wait()
}

// goroutineLine reports whether t opens a goroutine's stack in a Go crash report: "goroutine 17
// [running]:".
func goroutineLine(t string) bool {
	rest, ok := strings.CutPrefix(t, "goroutine ")
	if !ok {
		return false
	}
	n, rest, ok := strings.Cut(rest, " [")
	if _, err := strconv.Atoi(n); err != nil || !ok {
		return false
	}
	return strings.HasSuffix(rest, ":")
}
