package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// startTrainerOn is startTrainerProc with the volume given: vol may hold checkpoints already.
func startTrainerOn(t *testing.T, bin, vol, id, coord, cfg, certs string) *trainerProc {
	t.Helper()
	return launchTrainer(t, bin, vol, id, freeAddr(t), coord, cfg, certs)
}

// ddpmRun runs the ddpm binary with args and returns its stdout, stderr and exit status.
func ddpmRun(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ddpm %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// TestRollbackAfterHolderLost: the only holder of the run's newest committed checkpoint (a) is
// killed and its volume removed. b, whose volume holds an older committed checkpoint (copied
// from a with ddpm checkpoint fetch), joins: the run waits for a holder of the newest, and ddpm
// status says so, naming the rollback command. ddpm checkpoint rollback refuses a step nobody
// holds and, without --yes, only prints what it would abandon; with --yes the run restarts
// from b's checkpoint at once, b loads it from its own volume, recomputes the abandoned steps
// and completes the run. Before the rollback existed, the run waited forever. a, restarted
// after the rollback with a saved copy of its volume, is put in no ring but uncommits the
// abandoned checkpoints on it (ddpm checkpoint list shows them not committed); it used to keep
// them committed, for sample, eval and export of the volume to take.
func TestRollbackAfterHolderLost(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 24, 1, 1, time.Second, func(r *config.Run) { r.KeepCheckpoints = 10 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)

	volA, volB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startTrainerOn(t, bin, volA, "a", coord, cfg, certs)
	first := waitFor(t, cli, "a's first committed checkpoint", 3*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })
	keep := first.Checkpoints[0]
	if err := os.MkdirAll(volB, 0o755); err != nil {
		t.Fatal(err)
	}
	// a marks its copy committed a moment after the cluster commits it; until then it does not
	// serve it.
	fetchFromA := func(step int64, out string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			stdout, errOut, code := ddpmRun(t, bin, "checkpoint", "fetch", a.listen, "--step", fmt.Sprint(step), "--out", out, "--certs", certs)
			if code == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("fetch of checkpoint %d from a: status %d\n%s%s", step, code, stdout, errOut)
			}
		}
	}
	fetchFromA(keep.Step, filepath.Join(volB, trainer.CheckpointFile))
	// a goes on alone and commits newer checkpoints, which only it holds; then it is killed and
	// its volume lost. It is killed once it serves the newest (so holds it committed on its
	// volume): killed before its mark, its saved volume could hold none of the abandoned ones.
	newer := waitFor(t, cli, "a checkpoint newer than b's", time.Minute, func(s *fsm.State) bool {
		return s.LatestCheckpoint().Step > keep.Step
	})
	fetchFromA(newer.LatestCheckpoint().Step, filepath.Join(t.TempDir(), "marked.db"))
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.exited
	// a's volume is lost to the run; a copy of it (saved) comes back after the rollback.
	saved := filepath.Join(dir, "a-saved")
	if err := os.Rename(volA, saved); err != nil {
		t.Fatal(err)
	}
	b := startTrainerOn(t, bin, volB, "b", coord, cfg, certs)
	waiting := waitFor(t, cli, "the wait for a holder", time.Minute, func(s *fsm.State) bool {
		m := s.Members["b"]
		return s.HolderWait() != nil && s.Members["a"] == nil && m != nil
	})
	lost := waiting.LatestCheckpoint()
	if lost.Step == run.Steps || waiting.Status != fsm.StatusRunning {
		t.Fatalf("a finished the run (%s at step %d) before it was killed; the test needs a longer run", waiting.Status, lost.Step)
	}
	// The wait stays: b holds an older checkpoint only.
	time.Sleep(2 * run.HeartbeatTimeout.Std())
	if st := waitFor(t, cli, "state", time.Minute, func(*fsm.State) bool { return true }); st.HolderWait() == nil || st.Generation.World != 0 {
		t.Fatalf("the run did not keep waiting for a holder of %d: generation %+v", lost.Step, st.Generation)
	}

	hint := regexp.MustCompile(fmt.Sprintf(`(?m)^waiting +for a holder of checkpoint %d \(a\) to rejoin; if none can: ddpm checkpoint rollback --coordinator %s --to-step %d --certs %s$`,
		lost.Step, regexp.QuoteMeta(coord), keep.Step, regexp.QuoteMeta(certs)))
	if out, errOut, code := ddpmRun(t, bin, "status", "--coordinator", coord, "--certs", certs); code != 0 || !hint.MatchString(out) {
		t.Fatalf("ddpm status (%d) does not match %q:\n%s%s", code, hint, out, errOut)
	}
	rollback := func(args ...string) (string, string, int) {
		return ddpmRun(t, bin, append([]string{"checkpoint", "rollback", "--coordinator", coord, "--certs", certs}, args...)...)
	}
	// A step nobody holds: one line, status 2 (the command's to change), nothing changed.
	if _, errOut, code := rollback("--to-step", fmt.Sprint(lost.Step), "--yes"); code != 2 ||
		errOut != fmt.Sprintf("ddpm: checkpoint rollback: cannot roll back: checkpoint %d is the newest committed one, nothing is newer to abandon (committed checkpoints: %s)\n", lost.Step, committedList(waiting)) {
		t.Fatalf("rollback to the lost step: status %d, stderr %q", code, errOut)
	}
	// Without --yes: the plan, status 2, nothing changed.
	var abandoned []int64
	for _, c := range waiting.Checkpoints {
		if c.Step > keep.Step {
			abandoned = append(abandoned, c.Step)
		}
	}
	out, errOut, code := rollback("--to-step", fmt.Sprint(keep.Step))
	if code != 2 || !strings.Contains(out, fmt.Sprintf("the run restarts from checkpoint %d (sha256 %.16s, held by a (gone), b)\n", keep.Step, keep.SHA256)) ||
		!strings.Contains(out, fmt.Sprintf("abandons committed checkpoint %d (sha256 %.16s, held by a (gone))\n", lost.Step, lost.SHA256)) ||
		!strings.Contains(errOut, "nothing done; run again with --yes to abandon checkpoint") {
		t.Fatalf("rollback without --yes: status %d\n%s%s", code, out, errOut)
	}
	if st := waitFor(t, cli, "state", time.Minute, func(*fsm.State) bool { return true }); len(st.Abandoned) != 0 || st.Generation.World != 0 {
		t.Fatalf("rollback without --yes changed the run: %+v", st.Generation)
	}

	listRow := func(step int64, committed bool) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^%d +\d+ +%v +`, step, committed))
	}
	// The abandoned checkpoints a's volume holds as committed (a may have been killed between
	// the cluster's commit of the newest one and its own mark).
	savedDB := filepath.Join(saved, trainer.CheckpointFile)
	var onSaved []int64
	out, errOut, code = ddpmRun(t, bin, "checkpoint", "list", savedDB)
	for _, step := range abandoned {
		if listRow(step, true).MatchString(out) {
			onSaved = append(onSaved, step)
		}
	}
	if code != 0 || len(onSaved) == 0 {
		t.Fatalf("a's saved volume holds none of the abandoned checkpoints %v committed (status %d):\n%s%s", abandoned, code, out, errOut)
	}

	out, errOut, code = rollback("--to-step", fmt.Sprint(keep.Step), "--yes")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("restarts the run from step %d\n", keep.Step)) {
		t.Fatalf("rollback: status %d\n%s%s", code, out, errOut)
	}
	// a comes back with its saved volume after the rollback: standing by (max_trainers 1) or
	// finding the run finished, it is put in no ring, yet it uncommits the abandoned
	// checkpoints on its volume and ends with status 0 when the run does.
	a = startTrainerOn(t, bin, saved, "a", coord, cfg, certs)
	select {
	case <-b.exited:
		if b.err != nil {
			t.Fatalf("b: %v; stderr:\n%s", b.err, b.stderr.String())
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("b did not finish the run within 3 minutes after the rollback (log %s)", b.log)
	}
	final := waitFor(t, cli, "run success", 10*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if final.Status != fsm.StatusSucceeded || final.LatestCheckpoint().Step != run.Steps {
		t.Fatalf("run %s at step %d (%s), want succeeded at %d", final.Status, final.Step, final.Reason, run.Steps)
	}
	var got []int64
	for _, c := range final.Abandoned {
		got = append(got, c.Step)
		if c.RolledBackTo != keep.Step {
			t.Fatalf("abandoned %+v, want rolled back to %d", c, keep.Step)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(abandoned) {
		t.Fatalf("abandoned steps %v, want %v", got, abandoned)
	}
	// The recomputed checkpoint of the lost step is committed (another generation, another hash).
	for _, c := range final.Checkpoints {
		if c.Step == lost.Step && (c.SHA256 == lost.SHA256 || len(c.Holders) != 1 || c.Holders[0] != "b") {
			t.Fatalf("checkpoint %d at the end: %+v, lost one %.12s", c.Step, c, lost.SHA256)
		}
	}
	// b loaded the checkpoint from its own volume (nobody else could serve it).
	logText, err := os.ReadFile(b.log)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(logText, []byte("fetching checkpoint")) {
		t.Fatalf("b fetched a checkpoint instead of loading its own:\n%s", logText)
	}
	select {
	case <-a.exited:
		if a.err != nil {
			t.Fatalf("the restarted a: %v; stderr:\n%s", a.err, a.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("the restarted a did not end within a minute of the run (log %s)", a.log)
	}
	aLog, err := os.ReadFile(a.log)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range onSaved {
		if !regexp.MustCompile(fmt.Sprintf(`"msg":"%s",("trainer":"a",)?"step":%d,`, regexp.QuoteMeta(trainer.MsgUncommittedAbandoned), step)).Match(aLog) {
			t.Fatalf("the restarted a's log does not say it uncommitted step %d:\n%s", step, aLog)
		}
	}
	out, errOut, code = ddpmRun(t, bin, "checkpoint", "list", savedDB)
	for _, step := range onSaved {
		if code != 0 || !listRow(step, false).MatchString(out) || !listRow(keep.Step, true).MatchString(out) {
			t.Fatalf("ddpm checkpoint list of a's volume (status %d) does not show %d uncommitted and %d committed:\n%s%s", code, step, keep.Step, out, errOut)
		}
	}
	listed := regexp.MustCompile(fmt.Sprintf(`(?m)^ABANDONED +SHA256 +GENERATION +HOLDERS +ROLLED BACK TO +AT\n%d +%.16s +1 +a +%d `, lost.Step, lost.SHA256, keep.Step))
	if out, _, _ := ddpmRun(t, bin, "status", "--coordinator", coord, "--certs", certs); !listed.MatchString(out) {
		t.Fatalf("ddpm status does not list the abandoned checkpoints (%q):\n%s", listed, out)
	}
}

// committedList is the committed steps of s as the refusals name them ("4, 8, 12").
func committedList(s *fsm.State) string {
	steps := make([]string, len(s.Checkpoints))
	for i, c := range s.Checkpoints {
		steps[i] = fmt.Sprint(c.Step)
	}
	return strings.Join(steps, ", ")
}
