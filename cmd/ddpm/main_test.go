package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"ddpm/internal/testutil"
	"ddpm/internal/version"
)

// TestMain removes the binary that tests of real processes build (testutil.DDPMBinary).
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveDDPM()
	os.Exit(code)
}

// TestRootFlags: `ddpm --version` prints what `ddpm version` prints; an unknown flag of the root
// or of a subcommand exits 2 naming it once, with where to look.
func TestRootFlags(t *testing.T) {
	configureRoot()
	run := func(args ...string) (string, error) { return runDDPM(t, args...) }
	for _, args := range [][]string{{"--version"}, {"version"}} {
		if out, err := run(args...); err != nil || out != "ddpm "+version.Version+"\n" {
			t.Errorf("%v: %q, %v", args, out, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "unknown flag: --bogus (see ddpm --help)"},
		{[]string{"checkpoint", "list", "--bogus"}, "checkpoint list: unknown flag: --bogus (see ddpm checkpoint list --help)"},
	} {
		_, err := run(tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%v: %v, want exit 2 %q", tc.args, err, tc.want)
		}
	}
}

// TestGroupCommandTypo: a mistyped subcommand of a group command exits 2 with one line (and a
// suggestion when one is close); cobra printed the group's help with status 0, so a typo in a
// script passed. The group alone still prints its help, whose usage names only its subcommands.
func TestGroupCommandTypo(t *testing.T) {
	configureRoot()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "lst", "x.db"}, `checkpoint: unknown command "lst"; did you mean list? (see ddpm checkpoint --help)`},
		{[]string{"model", "list"}, `model: unknown command "list" (see ddpm model --help)`},
	} {
		_, err := runDDPM(t, tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%v: %v, want exit 2 %q", tc.args, err, tc.want)
		}
	}
	out, err := runDDPM(t, "model")
	if err != nil || !strings.Contains(out, "Usage:\n  ddpm model [command]\n\nAvailable Commands:") {
		t.Errorf("ddpm model: %v\n%s", err, out)
	}
	out, err = runDDPM(t, "checkpoint", "help", "list")
	if err != nil || !strings.Contains(out, "Usage:\n  ddpm checkpoint list FILE [flags]\n") {
		t.Errorf("ddpm checkpoint help list: %v\n%s", err, out)
	}
	_, err = runDDPM(t, "checkpoint", "help", "lst")
	if want := `checkpoint: no help for "lst" (see ddpm checkpoint --help)`; err == nil || err.Error() != want {
		t.Errorf("ddpm checkpoint help lst: %v, want %s", err, want)
	}
	out, err = runDDPM(t, "checkpoint", "list", "--help")
	if err != nil || !strings.Contains(out, "Usage:\n  ddpm checkpoint list FILE [flags]\n") {
		t.Errorf("ddpm checkpoint list --help: %v\n%s", err, out)
	}
}
