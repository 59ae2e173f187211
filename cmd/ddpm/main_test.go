package main

import (
	"errors"
	"os"
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
