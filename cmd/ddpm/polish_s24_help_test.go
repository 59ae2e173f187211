package main

import (
	"strings"
	"testing"
)

// TestPolishS24HelpUnknownCommand: `ddpm help stauts` is the one line and exit 2 of `ddpm stauts`
// (cobra's help command printed ddpm's whole help with exit 0), also for a group's subcommand and
// for a name past a command without subcommands; a known name still prints its help, exit 0.
func TestPolishS24HelpUnknownCommand(t *testing.T) {
	run := func(args ...string) (int, string, string) {
		o, e, code := nuRun(t, args...)
		return code, o, e
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "stauts"}, `ddpm: unknown command "stauts"; did you mean status? (see ddpm --help)`},
		{[]string{"help", "checkpoint", "lst"}, `ddpm: checkpoint: unknown command "lst"; did you mean list? (see ddpm checkpoint --help)`},
		{[]string{"help", "status", "extra"}, `ddpm: help: status has no subcommands, "extra" is none (see ddpm help status)`},
	} {
		code, o, e := run(tc.args...)
		if code != 2 || o != "" || e != tc.want+"\n" {
			t.Errorf("ddpm %q: exit %d, stdout %.80q, stderr %q; want exit 2, stderr %q", tc.args, code, o, e, tc.want)
		}
	}
	// Shell completion of help's names still offers the subcommands (cobra's help command did).
	if code, o, _ := run("__complete", "help", "checkpoint", "co"); code != 0 || !strings.HasPrefix(o, "compact\t") {
		t.Errorf("ddpm __complete help checkpoint co: exit %d, stdout %q; want compact first", code, o)
	}
	for _, tc := range [][]string{{"help", "checkpoint", "compact"}, {"help"}, {"help", "checkpoint", "help", "compact"}} {
		code, o, e := run(tc...)
		want := "Usage:\n  ddpm " + strings.Replace(strings.Join(tc[1:], " "), " help", "", 1)
		if code != 0 || e != "" || !strings.Contains(o, want) {
			t.Errorf("ddpm %q: exit %d, stderr %q, stdout %.200q; want exit 0 and %q", tc, code, e, o, want)
		}
	}
}
