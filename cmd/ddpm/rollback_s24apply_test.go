package main

import (
	"testing"

	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
)

// TestApplyS24RollbackBadStepExit2: `ddpm checkpoint rollback --to-step 5 --yes` against a real
// coordinator whose running run has committed no checkpoint is refused in one line with status
// 2 (a --to-step the run cannot go back to is the command's to change) and the run is left as
// it was. It exited 1, the status of a failure the user cannot fix by changing the command.
func TestApplyS24RollbackBadStepExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	addr, cli, gen := startMonitoredNode(t, 6)
	out, errOut, code := ddpmRun(t, bin, "checkpoint", "rollback", "--coordinator", addr, "--certs", monitorCerts, "--to-step", "5", "--yes")
	want := "ddpm: checkpoint rollback: cannot roll back: no checkpoint is committed yet: there is nothing to roll back\n"
	if code != 2 || errOut != want || out != "" {
		t.Fatalf("rollback --to-step 5: status %d, stdout %q, stderr %q\nwant status 2, stderr %q", code, out, errOut, want)
	}
	st := waitFor(t, cli, "state", 0, func(*fsm.State) bool { return true })
	if st.Status != fsm.StatusRunning || st.Generation.Number != gen || st.Step != 6 {
		t.Fatalf("after the refused rollback: status %s, generation %d, step %d; want running, %d, 6", st.Status, st.Generation.Number, st.Step, gen)
	}
}
