package main

import (
	"context"
	"strings"
	"testing"
)

// TestRollbackToStepFlag: --to-step is required, so its help line shows no "(default -1)" (it
// did: the -1 meant "not given"); a negative or non-numeric step is refused as --step is
// elsewhere, and a missing one says it is required, each with exit status 2.
func TestRollbackToStepFlag(t *testing.T) {
	out, err := runCLI(t, context.Background(), nil, "checkpoint", "rollback", "--help")
	const line = "      --to-step int          the committed checkpoint step to restart from, or 0 for the start (required)\n"
	if err != nil || !strings.Contains(out, line) {
		t.Errorf("ddpm checkpoint rollback --help: %v, want the line %q in:\n%s", err, line, out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "rollback", "--coordinator", "127.0.0.1:1", "--insecure"},
			"checkpoint rollback: --to-step N is required (a committed checkpoint step a member holds, or 0)"},
		{[]string{"checkpoint", "rollback", "--coordinator", "127.0.0.1:1", "--insecure", "--to-step", "-1"},
			`checkpoint rollback: invalid argument "-1" for "--to-step" flag: want a step of 0 or more (see ddpm checkpoint rollback --help)`},
		{[]string{"checkpoint", "rollback", "--coordinator", "127.0.0.1:1", "--insecure", "--to-step", "ten"},
			`checkpoint rollback: invalid argument "ten" for "--to-step" flag: want a whole number of steps (see ddpm checkpoint rollback --help)`},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}
