package localrun

import (
	"context"
	"errors"
	"testing"
)

// TestRuntimeCrashIsRestarted: a process that panics on a goroutine of its own after a good
// start (the Go runtime prints "panic: ..." and a goroutine trace and exits 2) is restarted as a
// crash, its Exit naming the panic line, although 2 is its Spec's FatalStatus at any time (a
// trainer's refused input). It ended the process for good as refused input, its LastLine the
// trace's last line (a source offset): under ddpm local a trainer's panic on an nn pool worker
// stopped the whole run. A panic again with its restarts spent names the panic too.
func TestRuntimeCrashIsRestarted(t *testing.T) {
	s, _, dir := newSup(t)
	counter := scripted(t, s, dir, "ready-panic,ok", Spec{Restart: 10, StartAttempts: 3, FatalStatus: 2, FatalAnyTime: true})
	if err := s.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("Wait = %v, want the restarted process's status 0", err)
	}
	if n := starts(t, counter); n != 2 {
		t.Fatalf("started %d times, want 2", n)
	}
	const panicLine = "panic: injected on a worker"
	if e := drain(s); len(e) < 1 || !e[0].Restarting || e[0].GaveUp || e[0].Crash != panicLine || e[0].LastLine != panicLine {
		t.Fatalf("exits %+v, want the first restarting with Crash and LastLine %q", e, panicLine)
	}

	s, _, dir = newSup(t)
	scripted(t, s, dir, "ready-panic,ready-panic,ok", Spec{Restart: 1, FatalStatus: 2, FatalAnyTime: true})
	err := s.Wait(context.Background(), "s")
	var re *RestartsSpentError
	if !errors.As(err, &re) || re.LastLine != panicLine || err.Error() != "localrun: s failed 2 times in 0s; not restarted again: exit status 2" {
		t.Fatalf("Wait = %v (%+v), want the RestartsSpentError of 2 failures naming %q", err, re, panicLine)
	}
}

// TestRecoveredPanicNamesIt: a process that prints the Go runtime's panic report and exits with
// another status (ddpm's main recovers a panic of a command and exits 70, a bug) is a crash too:
// its Exit names the panic line, which ddpm local's restart line shows ("trainer-0 exited (exit
// status 70, panic: ...); restarting it"). Crash was set for the runtime's status 2 only, so the
// restart line said "exit status 70" and nothing of the panic.
func TestRecoveredPanicNamesIt(t *testing.T) {
	s, _, dir := newSup(t)
	scripted(t, s, dir, "ready-bug,ok", Spec{Restart: 10, StartAttempts: 3, FatalStatus: 2, FatalAnyTime: true})
	if err := s.Wait(context.Background(), "s"); err != nil {
		t.Fatalf("Wait = %v, want the restarted process's status 0", err)
	}
	const panicLine = "panic: injected in a command"
	if e := drain(s); len(e) < 1 || !e[0].Restarting || e[0].GaveUp || e[0].Crash != panicLine || e[0].LastLine != panicLine {
		t.Fatalf("exits %+v, want the first restarting with Crash and LastLine %q", e, panicLine)
	}
}
