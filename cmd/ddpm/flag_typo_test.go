package main

import (
	"bytes"
	"errors"
	"os/exec"
	"testing"

	"ddpm/internal/testutil"
)

// TestFlagTypoSuggestion: a mistyped long flag of the real command tree is answered with the
// closest flag of that command (edit distance at most 2), as a mistyped subcommand is; a
// shorthand flag, a hidden flag's near name and a name near none keep the plain line; the start
// of a flag's name (--resol) is taken for it, and got no hint before config.Nearest. Each exits
// 2. The line ended "(see ddpm dataset inspect --help)" with no suggestion.
func TestFlagTypoSuggestion(t *testing.T) {
	configureRoot()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dataset", "inspect", "mnist", "--resolutoin", "28"},
			"dataset inspect: unknown flag: --resolutoin; did you mean --resolution? (see ddpm dataset inspect --help)"},
		{[]string{"dataset", "inspect", "--resolutoin=28", "mnist"},
			"dataset inspect: unknown flag: --resolutoin; did you mean --resolution? (see ddpm dataset inspect --help)"},
		// The start of a flag's name (4 letters or more), as of a preset's (config.Nearest).
		{[]string{"dataset", "inspect", "mnist", "--resol", "28"},
			"dataset inspect: unknown flag: --resol; did you mean --resolution? (see ddpm dataset inspect --help)"},
		{[]string{"--verison"}, "unknown flag: --verison; did you mean --version? (see ddpm --help)"},
		{[]string{"dataset", "inspect", "mnist", "--Resolution", "28"},
			"dataset inspect: unknown flag: --Resolution; did you mean --resolution? (see ddpm dataset inspect --help)"},
		{[]string{"checkpoint", "list", "--hepl", "x.db"}, "checkpoint list: unknown flag: --hepl; did you mean --help? (see ddpm checkpoint list --help)"},
		// --rules-version is hidden: not offered.
		{[]string{"coordinator", "--rules-versio", "2"}, "coordinator: unknown flag: --rules-versio (see ddpm coordinator --help)"},
		{[]string{"checkpoint", "list", "-z", "x.db"}, "checkpoint list: unknown shorthand flag: 'z' in -z (see ddpm checkpoint list --help)"},
		{[]string{"checkpoint", "list", "--bogus", "x.db"}, "checkpoint list: unknown flag: --bogus (see ddpm checkpoint list --help)"},
		// Two letters both replaced is no typo.
		{[]string{"coordinator", "--ab", "x"}, "coordinator: unknown flag: --ab (see ddpm coordinator --help)"},
	} {
		_, err := runDDPM(t, tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%v:\n got %v\nwant exit 2, %s", tc.args, err, tc.want)
		}
	}

	// The binary prints it as one line of its own, exit status 2.
	cmd := exec.Command(testutil.DDPMBinary(t), "dataset", "inspect", "mnist", "--resolutoin", "28")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var xe *exec.ExitError
	want := "ddpm: dataset inspect: unknown flag: --resolutoin; did you mean --resolution? (see ddpm dataset inspect --help)\n"
	if !errors.As(err, &xe) || xe.ExitCode() != 2 || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("ddpm dataset inspect mnist --resolutoin 28: %v, stdout %q, stderr %q; want exit 2, %q", err, stdout.String(), stderr.String(), want)
	}
}
