package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"testing"

	"ddpm/internal/testutil"
)

// TestTopLevelTypo: a mistyped command (ddpm stauts, with or without its arguments and flags) is
// one line naming it with the near names, exit 2, as a group's mistyped subcommand; it was
// cobra's five lines ("unknown command ... for "ddpm"", an empty line, "Did you mean this?", the
// name, an empty line, each after "ddpm: ") with exit 1, a run failure's status. Under
// DDPM_CHECK_FLAGS, as the manifest check runs command lines, the typo is refused the same way
// (a group's mistyped subcommand was printed as its arguments, exit 0). An unknown flag of ddpm
// itself is still named as one.
func TestTopLevelTypo(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"stauts"}, `ddpm: unknown command "stauts"; did you mean status? (see ddpm --help)`},
		{"", []string{"stauts", "runs/x", "--timeout", "1s"}, `ddpm: unknown command "stauts"; did you mean status? (see ddpm --help)`},
		{"", []string{"zzzzzz"}, `ddpm: unknown command "zzzzzz" (see ddpm --help)`},
		{envCheckFlags + "=1", []string{"stauts"}, `ddpm: unknown command "stauts"; did you mean status? (see ddpm --help)`},
		{envCheckFlags + "=1", []string{"checkpoint", "lst", "x.db"}, `ddpm: checkpoint: unknown command "lst"; did you mean list? (see ddpm checkpoint --help)`},
		{"", []string{"--bogus"}, `ddpm: unknown flag: --bogus (see ddpm --help)`},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var xe *exec.ExitError
		if err != nil && !errors.As(err, &xe) {
			t.Fatal(err)
		}
		if code := cmd.ProcessState.ExitCode(); code != 2 || o.Len() != 0 || e.String() != tc.want+"\n" {
			t.Errorf("%s ddpm %q: exit %d, stdout %q, stderr %q; want exit 2, stderr %q", tc.env, tc.args, code, o.String(), e.String(), tc.want)
		}
	}
}
