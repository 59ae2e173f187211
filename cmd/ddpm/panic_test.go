package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"ddpm/internal/testutil"
)

// TestPanicExitsAsBug: a panic that reaches main (forced through the test-only DDPM_TEST_PANIC,
// as a library's would) exits with status 70, not 2: ddpm local and scripts read 2 as refused
// input, and a crashed trainer stopped the whole run instead of being restarted (the Go
// runtime's own status for a panic is 2). stderr holds the stack trace first, then, last, the
// one line saying it is a bug and where the trace is; a value of several lines is one line
// there. A user mistake still exits 2 with its one line (flags are refused before the panic).
func TestPanicExitsAsBug(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run := func(panicWith string, args ...string) (stdout, stderr string, code int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), envTestPanic+"="+panicWith)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var xe *exec.ExitError
		if err != nil && !errors.As(err, &xe) {
			t.Fatal(err)
		}
		return o.String(), e.String(), cmd.ProcessState.ExitCode()
	}

	out, errText, code := run("assignment to entry in nil map\n(second line)", "version")
	lines := strings.Split(strings.TrimSuffix(errText, "\n"), "\n")
	want := "ddpm: internal error (a bug in ddpm, not in your input): assignment to entry in nil map (second line); its stack trace is above; please report it with the trace"
	if code != exitBug || out != "" || lines[len(lines)-1] != want {
		t.Fatalf("status %d, stdout %q, stderr's last line %q;\nwant status %d, no output, last line %q\nstderr:\n%s", code, out, lines[len(lines)-1], exitBug, want, errText)
	}
	if lines[0] != "panic: assignment to entry in nil map" || !strings.Contains(errText, "\ngoroutine 1 [running]:\n") || !strings.Contains(errText, "\nmain.execute()\n") {
		t.Errorf("stderr does not start with the panic and its stack trace:\n%s", errText)
	}

	out, errText, code = run("never reached", "version", "--bogus")
	if want := "ddpm: version: unknown flag: --bogus (see ddpm version --help)\n"; code != 2 || out != "" || errText != want {
		t.Errorf("a mistyped flag: status %d, stdout %q, stderr %q; want status 2, stderr %q", code, out, errText, want)
	}
}
