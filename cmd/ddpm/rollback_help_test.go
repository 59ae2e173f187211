package main

import (
	"context"
	"strings"
	"testing"
)

// TestRollbackHelpHealthyRun: ddpm checkpoint rollback --help says that it works on a healthy
// run too (it abandons checkpoints live members hold, which are computed again) and when to use
// it, not only the lost-holder case.
func TestRollbackHelpHealthyRun(t *testing.T) {
	out, err := runCLI(t, context.Background(), nil, "checkpoint", "rollback", "--help")
	want := "It works on a healthy run too: the checkpoints after N are abandoned even when live members\n" +
		"hold them, and the steps after N are computed again. Use it when a holder is lost for good,\n" +
		"or to undo steps (a loss that went bad after step N).\n"
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("ddpm checkpoint rollback --help: %v, want %q in:\n%s", err, want, out)
	}
}
