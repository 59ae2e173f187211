package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
	"ddpm/trainer"
)

// `ddpm checkpoint rollback`: the way out of a run that waits for a holder of its newest
// committed checkpoint that will never come back (fsm.Rollback).
var rollbackFlags struct {
	coordinator string
	toStep      int64
	yes         bool
	timeout     time.Duration
	sec         *tlsauth.Config
}

var checkpointRollbackCmd = &cobra.Command{
	Use:   "rollback --coordinator ADDR --to-step N [--yes] (--certs DIR | --insecure)",
	Short: "Abandon the committed checkpoints after step N and restart the run from N",
	Long: `A generation starts only when a member holds the run's newest committed checkpoint. When its
only holders are gone for good (their volumes lost), the run waits for them forever
('waiting for a holder of checkpoint N ... to rejoin' in ddpm status and the coordinator's log).
This command abandons the committed checkpoints after step N and restarts the run from N at
once; the steps after N are computed again.

It works on a healthy run too: the checkpoints after N are abandoned even when live members
hold them, and the steps after N are computed again. Use it when a holder is lost for good,
or to undo steps (a loss that went bad after step N).

N must be a committed checkpoint that a current member holds (ddpm status lists them with their
holders), an older committed checkpoint a current member's volume still holds (one that fell off
the coordinator's list of the newest ones; the refusal of another N names them), or 0 to start
again from the initial parameters. Without --yes the command prints what
would be abandoned and changes nothing. The abandoned checkpoints stay listed in ddpm status.

A failed run (a trainer reported a failure, ranks diverged) is revived the same way: roll it
back to a committed checkpoint, its newest one included (nothing is abandoned then), or to 0;
restarted trainers then join it again. A succeeded run is not rolled back.

Exit status 2 for a --to-step the run cannot go back to, a cluster with no run configured or
whose run succeeded, and a run not rolled back for want of --yes; 1 when no coordinator answers.`,
	// A run folder given as the other checkpoint commands take one is answered in runRollback.
	Args: func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			if _, _, err := runFolderCluster(args[0]); err == nil { // rollbackFolderLine answers it
				return nil
			}
		}
		return cobra.NoArgs(cmd, args)
	},
	RunE: runRollback,
}

// rollbackFolderLine is the answer to `ddpm checkpoint rollback RUN`, a ddpm local run folder
// given as the other checkpoint commands take one: rollback asks the run's coordinators, so the
// line gives the command with the run's coordinator addresses and certificates (local.json),
// and how to have them up (unless the run is going); of a run that finished, that a finished run
// is not rolled back and how to train again from a step (finishedRollbackLine). "" when dir is
// no run folder (runFolderCluster fails).
//
//	checkpoint rollback asks a running cluster's coordinators, not a folder: for the ddpm local run runs/a, start it (ddpm local --resume runs/a), then: ddpm checkpoint rollback --coordinator 127.0.0.1:40001 --certs runs/a/certs --to-step N
func rollbackFolderLine(dir string) string {
	coords, certs, err := runFolderCluster(dir)
	if err != nil {
		return ""
	}
	start := fmt.Sprintf("start it (ddpm local --resume %s), then", shellWord(dir))
	if localrun.Running(dir) != nil {
		start = "which is running"
	} else if steps, ok := runFolderSteps(dir); ok && runFolderFinished(dir, steps) {
		// --resume starts nothing for it, and its coordinators would refuse: a succeeded run
		// is not rolled back.
		return finishedRollbackLine(dir, steps, rollbackFlags.toStep)
	}
	return fmt.Sprintf("checkpoint rollback asks a running cluster's coordinators, not a folder: for the ddpm local run %s, %s: ddpm checkpoint rollback --coordinator %s --certs %s --to-step N",
		dir, start, strings.Join(coords, ","), shellWord(certs))
}

// finishedRollbackLine is the answer to `ddpm checkpoint rollback RUN [--to-step M]` for a ddpm
// local run that finished at step steps: a finished run is not rolled back, and the commands
// that train again from step M (to, -1 when not given: "a step M"), with the steps RUN holds
// when M is not among them (review N3: the line ignored the --to-step given):
//
//	checkpoint rollback: the ddpm local run rn finished at step 40, and a finished run is not rolled back; to train again from step 20, export its weights (ddpm checkpoint export rn --step 20 --out rn-step20.safetensors) and start a new run from them (ddpm local --init rn-step20.safetensors --out NEW)
//	... ; rn holds no checkpoint of step 10 (it holds steps 30, 40)
func finishedRollbackLine(dir string, steps, to int64) string {
	line := fmt.Sprintf("checkpoint rollback: the ddpm local run %s finished at step %d, and a finished run is not rolled back", dir, steps)
	if to < 0 {
		return line + fmt.Sprintf("; to train again from a step M, export its weights (ddpm checkpoint export %s --step M --out W.safetensors) and start a new run from them (ddpm local --init W.safetensors --out NEW)", shellWord(dir))
	}
	if held := heldSteps(dir); held != nil && !slices.Contains(held, to) {
		words := make([]string, len(held))
		for i, h := range held {
			words[i] = strconv.FormatInt(h, 10)
		}
		return line + fmt.Sprintf("; %s holds no checkpoint of step %d (it holds steps %s)", dir, to, strings.Join(words, ", "))
	}
	w := shellWord(fmt.Sprintf("%s-step%d.safetensors", filepath.Clean(dir), to))
	return line + fmt.Sprintf("; to train again from step %d, export its weights (ddpm checkpoint export %s --step %d --out %s) and start a new run from them (ddpm local --init %s --out NEW)",
		to, shellWord(dir), to, w, w)
}

// heldSteps lists the steps of the checkpoints the ddpm local run folder dir holds (its
// trainer-0's file, as the checkpoint commands read a run folder); nil when it cannot be read.
func heldSteps(dir string) []int64 {
	file, err := trainer.CheckpointFileIn(dir)
	if err != nil {
		return nil
	}
	list, ok := listCheckpointsNow(file)
	if !ok {
		return nil
	}
	held := []int64{}
	for _, in := range list {
		held = append(held, in.Step)
	}
	return held
}

// runFolderCluster reads the local.json of the ddpm local run folder dir: its coordinators'
// gRPC addresses (127.0.0.1:PORT, in replica order), which --coordinator takes, and its
// certificate directory dir/certs, which --certs takes. err is localrun.ReadManifest's
// (wrapping localrun.ErrNotARun) when dir holds no readable local.json.
func runFolderCluster(dir string) (addrs []string, certs string, err error) {
	m, err := localrun.ReadManifest(dir)
	if err != nil {
		return nil, "", err
	}
	return m.CoordinatorGRPC(), filepath.Join(dir, localrun.CertsDir), nil
}

func init() {
	f := checkpointRollbackCmd.Flags()
	f.StringVar(&rollbackFlags.coordinator, "coordinator", "", "coordinator gRPC address(es), comma-separated (host:port)")
	// A stepFlag: -1 until given, and its help shows no "(default -1)" beside "(required)".
	rollbackFlags.toStep = -1
	f.Var(stepFlag{&rollbackFlags.toStep}, "to-step", "the committed checkpoint step to restart from, or 0 for the start (required)")
	f.BoolVar(&rollbackFlags.yes, "yes", false, "roll back (without it, only print what would be abandoned)")
	f.DurationVar(&rollbackFlags.timeout, "timeout", 10*time.Second, "give up when no replica answers within this time")
	rollbackFlags.sec = tlsauth.AddFlags(f)
	checkpointCmd.AddCommand(checkpointRollbackCmd)
}

func runRollback(cmd *cobra.Command, args []string) error {
	const name = "checkpoint rollback"
	if len(args) == 1 { // a run folder (Args)
		return withExit(exitUsage, errors.New(rollbackFolderLine(args[0])))
	}
	addrs, err := coordinatorAddrs(name, rollbackFlags.coordinator)
	if err != nil {
		return err
	}
	to := rollbackFlags.toStep
	switch {
	case !cmd.Flags().Changed("to-step"):
		return withExit(exitUsage, fmt.Errorf("%s: --to-step N is required (a committed checkpoint step a member holds, or 0)", name))
	case rollbackFlags.timeout <= 0:
		return withExit(exitUsage, fmt.Errorf("%s: --timeout must be positive, got %v", name, rollbackFlags.timeout))
	}
	sec, err := monitorSecurity(cmd, rollbackFlags.sec)
	if err != nil {
		return err
	}
	_, st, err := fetchState(cmd.Context(), name, addrs, sec, rollbackFlags.sec.Dir, rollbackFlags.timeout)
	if err != nil {
		return err
	}
	abandon, err := st.PlanRollback(to)
	if err != nil {
		// A --to-step the run cannot go back to (the newest checkpoint of a running run, a
		// step no member holds, no committed checkpoint there) is the command's to change.
		return withExit(rollbackStatus(err), fmt.Errorf("%s: %w", name, err))
	}
	out := cmd.OutOrStdout()
	writeRollbackPlan(out, st, to, abandon)
	if !rollbackFlags.yes {
		what := "to abandon " + stepList(abandon)
		if len(abandon) == 0 {
			what = "to revive the run"
		}
		return withExit(exitUsage, fmt.Errorf("%s: nothing done; run again with --yes %s", name, what))
	}

	cli, err := coordinator.Dial(addrs, sec, coordinator.WithAttemptTimeout(min(rollbackFlags.timeout, 2*time.Second)))
	if err != nil {
		return withExit(exitUsage, err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), rollbackFlags.timeout)
	defer cancel()
	gen, err := cli.RollbackRun(ctx, to)
	switch {
	case errors.Is(err, coordinator.ErrUnavailable):
		// The rollback may still have been applied after the last attempt: say how to tell.
		return withExit(1, fmt.Errorf("%s: no coordinator answered at %s within %v; ddpm status shows whether it was applied (%v)",
			name, strings.Join(addrs, ","), rollbackFlags.timeout, err))
	case errors.Is(err, coordinator.ErrPermissionDenied):
		return withExit(exitUsage, fmt.Errorf("%s: %w (--certs %s: roll back with an operator's certificate, ddpm certs issue --role operator)", name, err, rollbackFlags.sec.Dir))
	case err != nil:
		return withExit(rollbackStatus(err), fmt.Errorf("%s: %w", name, err))
	}
	fmt.Fprintf(out, "rolled back: generation %d restarts the run from step %d\n", gen, to)
	return nil
}

// writeRollbackPlan prints what a rollback of st to step to does: where the run restarts, the
// committed checkpoints it abandons (with their holders, members or not) and the steps computed
// again.
func writeRollbackPlan(out io.Writer, st *fsm.State, to int64, abandon []fsm.Checkpoint) {
	holders := func(c fsm.Checkpoint) string {
		var hs []string
		for _, h := range c.Holders {
			if _, ok := st.Members[h]; ok {
				hs = append(hs, h)
			} else {
				hs = append(hs, h+" (gone)")
			}
		}
		return monOrNone(strings.Join(hs, ", "))
	}
	if st.Status == fsm.StatusFailed {
		fmt.Fprintf(out, "revives the failed run (%s)\n", st.Reason)
	}
	if to == 0 {
		fmt.Fprintln(out, "the run restarts from step 0 (the initial parameters)")
	} else {
		if c := st.RollbackPoint(to); c != nil {
			fmt.Fprintf(out, "the run restarts from checkpoint %d (sha256 %.16s, held by %s)\n", c.Step, c.SHA256, holders(*c))
		}
	}
	for _, c := range abandon {
		fmt.Fprintf(out, "abandons committed checkpoint %d (sha256 %.16s, held by %s)\n", c.Step, c.SHA256, holders(c))
	}
	last := st.Step
	if len(abandon) > 0 {
		last = max(last, abandon[len(abandon)-1].Step)
	}
	if n := len(st.Loss.Points); n > 0 {
		last = max(last, st.Loss.Points[n-1].Step)
	}
	if last > to {
		fmt.Fprintf(out, "steps %d-%d are computed again (their loss history is dropped)\n", to+1, last)
	}
}

// stepList names the steps of cs: "checkpoint 30" or "checkpoints 30, 40".
func stepList(cs []fsm.Checkpoint) string {
	steps := make([]string, len(cs))
	for i, c := range cs {
		steps[i] = fmt.Sprint(c.Step)
	}
	if len(cs) == 1 {
		return "checkpoint " + steps[0]
	}
	return "checkpoints " + strings.Join(steps, ", ")
}

// rollbackStatus is the exit status of a refused rollback: 2 for a --to-step the run cannot go
// back to (fsm.ErrBadRollback) and for a cluster with no run to roll back (fsm.ErrNoRun) or whose
// run finished (fsm.ErrRunFinished), which the command cannot change by trying again; 1
// otherwise.
func rollbackStatus(err error) int {
	if errors.Is(err, fsm.ErrBadRollback) || errors.Is(err, fsm.ErrNoRun) || errors.Is(err, fsm.ErrRunFinished) {
		return exitUsage
	}
	return 1
}
