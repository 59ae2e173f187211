package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// logRecordsS25 is every JSON record of the log file path, in order.
func logRecordsS25(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// TestInitGoneWaitsForFirstCommitS25: t0 and t2, given the --init weights, train a new run
// (checkpoint_every 40, 2 to 3 trainers) and are stopped (SIGSTOP; heartbeat_timeout 30 s keeps
// them members) in their first generation, before any commit. t1, started with the same flags on a
// node where the --init file is missing, logs one INFO line that it waits for the first committed
// checkpoint, at step 40, naming the run's members t0 and t2, and does not join: the generation
// stays the one t0 and t2 train in, t1 no member. Once they go on (SIGCONT) and commit step 40,
// t1 joins, takes a committed checkpoint from a peer, and the run finishes with all three, t1's
// final checkpoint recording the moved weights' sha256. Before, t1 exited 2 at once ("--init ...
// does not exist; the run has no committed checkpoint ...") and had to be started again by hand.
func TestInitGoneWaitsForFirstCommitS25(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	w := demoWeightsIn(t, dir)
	want := initWeightsSHA(t, w)
	run, cfg := procRun(t, dir, 120, 2, 3, 30*time.Second, func(r *config.Run) { r.CheckpointEvery = 40 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainer(t, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs, "--init", w)
	t2 := launchTrainer(t, bin, filepath.Join(dir, "t2-vol"), "t2", freeAddr(t), coord, cfg, certs, "--init", w)
	waitFor(t, cli, "the generation of t0 and t2", 2*time.Minute, func(s *fsm.State) bool { return s.Generation.World == 2 })
	for _, p := range []*trainerProc{t0, t2} {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	stopped := waitFor(t, cli, "the state with t0 and t2 stopped", 10*time.Second, func(*fsm.State) bool { return true })
	if len(stopped.Checkpoints) != 0 || stopped.Generation.World != 2 {
		t.Fatalf("t0 and t2 stopped with checkpoints %v in a generation of world %d; want none yet, world 2", stopped.Checkpoints, stopped.Generation.World)
	}

	gone := filepath.Join(dir, "gone.safetensors") // this node's copy of the weights is missing
	vol := filepath.Join(dir, "t1-vol")
	t1 := launchTrainer(t, bin, vol, "t1", freeAddr(t), coord, cfg, certs, "--init", gone)
	var wait map[string]any
	for deadline := time.Now().Add(time.Minute); wait == nil; time.Sleep(50 * time.Millisecond) {
		for _, rec := range logRecordsS25(t, t1.log) {
			if rec["msg"] == MsgInitGoneWaitsCommit {
				wait = rec
			}
		}
		select {
		case <-t1.exited:
			t.Fatalf("t1 exited (%v) instead of waiting for the first commit; stderr:\n%s", t1.err, t1.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(t1.log)
			t.Fatalf("t1 logged no %q within a minute:\n%s", MsgInitGoneWaitsCommit, b)
		}
	}
	if wait["level"] != "INFO" || wait["step"] != float64(40) || fmt.Sprint(wait["members"]) != "[t0 t2]" || wait["init"] != gone {
		t.Errorf("t1's wait line %v: want level INFO, step 40, members [t0 t2], init %s", wait, gone)
	}
	st := waitFor(t, cli, "the state while t1 waits", 10*time.Second, func(*fsm.State) bool { return true })
	if st.Members["t1"] != nil || st.Generation.Number != stopped.Generation.Number || len(st.Checkpoints) != 0 {
		t.Fatalf("while t1 waits: t1 a member %v, generation %d (want %d), checkpoints %v",
			st.Members["t1"] != nil, st.Generation.Number, stopped.Generation.Number, st.Checkpoints)
	}

	for _, p := range []*trainerProc{t0, t2} {
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	finishProcs(t, cli, run, map[string]*trainerProc{"t0": t0, "t1": t1, "t2": t2})
	recs := logRecordsS25(t, t1.log)
	var msgs []string
	for _, rec := range recs {
		msgs = append(msgs, fmt.Sprint(rec["msg"]))
	}
	iWait, iResume, iJoin := slices.Index(msgs, MsgInitGoneWaitsCommit), slices.Index(msgs, MsgInitGoneResumes), slices.Index(msgs, "joining")
	if slices.Contains(msgs, MsgInitGoneFreshRun) || !slices.Contains(msgs, "fetching checkpoint") || iWait < 0 || iResume < iWait || iJoin < iResume ||
		slices.Index(msgs[iWait+1:], MsgInitGoneWaitsCommit) >= 0 {
		t.Errorf("t1's log messages %q: want one wait line, then the resume line, then joining and fetching a checkpoint", msgs)
	}
	store, err := checkpoint.Open(filepath.Join(vol, trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := store.LatestCommitted()
	store.Close()
	if err != nil {
		t.Fatal(err)
	}
	if c.Step != run.Steps || trainer.InitSHA256(c.RNG) != want {
		t.Fatalf("t1's newest committed checkpoint: step %d, start record %q; want step %d recording %s", c.Step, c.RNG, run.Steps, want)
	}
}

// TestInitGoneWaitEndsWhenTrainingStopsS25: t0 and t2 train a new run that needs two trainers
// (no commit during the test); t1, its --init file missing, waits for the first commit (one INFO
// line). t2 is then killed for good: t0 waits for a second trainer, which t1 without the weights
// cannot be, so no generation trains. After the grace (20 s here: 4 x heartbeat_timeout is less)
// t1 ends its wait with the refusal's line and status 2, without having joined (review R4: it
// waited for ever). Before stop 25 t1 was refused at once, without the wait line.
func TestInitGoneWaitEndsWhenTrainingStopsS25(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	w := demoWeightsIn(t, dir)
	run, cfg := procRun(t, dir, endlessSteps, 2, 3, 2*time.Second, func(r *config.Run) { r.CheckpointEvery = endlessSteps / 2 })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainer(t, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs, "--init", w)
	t2 := launchTrainer(t, bin, filepath.Join(dir, "t2-vol"), "t2", freeAddr(t), coord, cfg, certs, "--init", w)
	waitFor(t, cli, "steps of t0 and t2", 2*time.Minute, func(s *fsm.State) bool { return s.Generation.World == 2 && s.Step >= 1 })

	gone := filepath.Join(dir, "gone.safetensors")
	t1 := launchTrainer(t, bin, filepath.Join(dir, "t1-vol"), "t1", freeAddr(t), coord, cfg, certs, "--init", gone)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(t1.log)
		if bytes.Contains(b, []byte(`"msg":"`+MsgInitGoneWaitsCommit+`"`)) {
			break
		}
		select {
		case <-t1.exited:
			t.Fatalf("t1 exited (%v) instead of waiting for the first commit; stderr:\n%s", t1.err, t1.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("t1 logged no %q within a minute:\n%s", MsgInitGoneWaitsCommit, b)
		}
	}
	if err := t2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-t2.exited
	expectInitGoneRefusal(t, "t1", t1, gone)
	st := waitFor(t, cli, "the state after t1 exited", 10*time.Second, func(*fsm.State) bool { return true })
	if st.Members["t1"] != nil || st.Members["t0"] == nil || st.Generation.World != 0 || st.Status.Terminal() {
		t.Fatalf("after t1 exited: t1 a member %v, t0 a member %v, world %d, run %s; want t0 waiting alone, running",
			st.Members["t1"] != nil, st.Members["t0"] != nil, st.Generation.World, st.Status)
	}
	stopTrainer(t, "t0", t0)
}
