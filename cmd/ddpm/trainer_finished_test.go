package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

func TestFinishedNote(t *testing.T) {
	for _, tc := range []struct {
		final, held int64
		on          []string
		want        string
	}{
		{100, 76, []string{"t1", "t2"}, "trainer t0: the run finished at step 100 without this trainer; this volume holds step 76; the final checkpoint is on t1, t2"},
		{100, 0, []string{"t1"}, "trainer t0: the run finished at step 100 without this trainer; this volume holds no committed checkpoint; the final checkpoint is on t1"},
		{100, 76, nil, "trainer t0: the run finished at step 100 without this trainer; this volume holds step 76; the coordinators record no other holder of the final checkpoint"},
		{100, 100, nil, "trainer t0: the run finished at step 100; this volume holds its final checkpoint"},
	} {
		if got := finishedNote("t0", tc.final, tc.held, tc.on); got != tc.want {
			t.Errorf("finishedNote(t0, %d, %d, %v) = %q, want %q", tc.final, tc.held, tc.on, got, tc.want)
		}
	}
}

// TestRunCompleteNote: ddpm local shows a trainer's run-complete line by its note alone, and
// takes the line of a trainer the run finished without as the end of its work (its status 0 is
// final: not restarted, the run not failed).
func TestRunCompleteNote(t *testing.T) {
	for line, want := range map[string]string{
		`{"time":"2026-11-30T08:00:29Z","level":"INFO","msg":"run complete","trainer":"trainer-0","step":100,"volume_step":68,"final_on":["trainer-1","trainer-2"],"note":"trainer trainer-0: the run finished at step 100 without this trainer; this volume holds step 68; the final checkpoint is on trainer-1, trainer-2"}`: "trainer trainer-0: the run finished at step 100 without this trainer; this volume holds step 68; the final checkpoint is on trainer-1, trainer-2",
		`{"time":"2026-11-30T08:00:29Z","level":"INFO","msg":"run complete","trainer":"trainer-1","step":100}`:    "",
		`{"time":"2026-11-30T08:00:29Z","level":"INFO","msg":"step","trainer":"trainer-1","step":100,"note":"x"}`: "",
		`run complete note=x`: "",
	} {
		if got := runCompleteNote([]byte(line)); got != want {
			t.Errorf("runCompleteNote(%s) = %q, want %q", line, got, want)
		}
		if want != "" && !trainerFinished([]byte(line)) {
			t.Errorf("trainerFinished(%s) = false: ddpm local would restart the trainer", line)
		}
	}
}

// startReplicaWithoutRun is startReplica without a run config: trainers wait in Join until a
// client submits one (SubmitRun).
func startReplicaWithoutRun(t *testing.T, certs string) (string, *coordinator.Client) {
	t.Helper()
	sec := tlsauthtest.Load(t, certs, nil)
	grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: t.TempDir(),
		Bootstrap: true, Version: "dev", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return grpcAddr, cli
}

// waitLogged waits (limit at most) until p's JSON log holds a record with message msg.
func waitLogged(t *testing.T, p *trainerProc, msg string, limit time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, []byte(`"msg":"`+msg+`"`)) {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("trainer exited (%v) before logging %q; stderr:\n%s", p.err, msg, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %s within %v", msg, p.log, limit)
		}
	}
}

// TestStalledTrainerFinishedWithout: in an elastic run (min_trainers 1) trainer t1 is SIGSTOPped
// past the heartbeat timeout; t0 finishes the run alone. SIGCONTed afterwards, t1 exits with
// status 0, nothing on stderr, and one "run complete" line saying the run finished without it,
// which committed step its volume holds (one the coordinators committed, now marked so on the
// volume) and that t0 holds the final checkpoint. It used to say only "the run succeeded without
// this trainer", leaving the user to find out which volume has the model.
//
// Both moments are chosen by the state, not by timing (on a loaded machine this test could
// race): the trainers get the run config only once both wait for one, so neither trains alone
// for more than one join retry (the first one up used to be able to train the whole run before
// the second joined: no 2-trainer ring ever); and the state is read again once t1 is stopped,
// so a run that moved on between the look and the stop is seen (it could finish, with t1).
func TestStalledTrainerFinishedWithout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir, err := os.MkdirTemp("", "ddpm-finished-without-")
	if err != nil {
		t.Fatal(err)
	}
	run, cfg := procRun(t, dir, 32, 1, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplicaWithoutRun(t, certs)
	// Registered after the replica's own cleanups, so it runs before them.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("trainer logs and volumes kept in %s", dir)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if st, err := cli.State(ctx); err == nil {
				for _, e := range st.Events {
					t.Logf("event %s gen %d %s: %s", time.Unix(0, e.Time).Format("15:04:05.000"), e.Generation, e.Kind, e.Text)
				}
			}
			return
		}
		os.RemoveAll(dir)
	})

	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	t1 := startTrainerProc(t, bin, dir, "t1", coord, cfg, certs)
	// Each trainer logs that it waits for a run config after 5 s of "no run config" answers to
	// its Join, which it retries every 0.5 s: once both have, the config goes in and both join
	// within one retry of it. The ring grows to both at the first checkpoint committed after the
	// second join (step 4 or 8), far from the run's end.
	for _, p := range []*trainerProc{t0, t1} {
		waitLogged(t, p, coordinator.MsgWaitingForRun, 3*time.Minute)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	_, err = cli.SubmitRun(ctx, run)
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	// t1 is to stop where both hold the newest committed checkpoint of the 2-trainer ring (stopped
	// while it is t1's alone, t0 having joined a ring starting from it and still fetching it, t1
	// would rightly keep the run waiting for its return) with more than a checkpoint interval
	// still to train. That is seen first, then t1 stopped, then the state read again: the run may
	// have moved on between the look and the stop, but not after it (the ring takes no step
	// without t1), so the second read says where t1 stopped. Good there: t0 holds the newest
	// committed checkpoint and t1 holds one too; and t1 is either still a rank with more than a
	// checkpoint interval to go (so no report it sent just before the stop can complete the run)
	// or dropped already (a read that came late) and no holder of a final checkpoint. Otherwise t1
	// goes on and the look starts over.
	bothHold := func(s *fsm.State) bool {
		n := len(s.Checkpoints)
		return s.Generation.World == 2 && n > 0 && slices.Equal(s.Checkpoints[n-1].Holders, []string{"t0", "t1"}) &&
			!s.Status.Terminal() && s.Step+run.CheckpointEvery < run.Steps
	}
	stoppedWell := func(s *fsm.State) bool {
		n := len(s.Checkpoints)
		if n == 0 || !slices.Contains(s.Checkpoints[n-1].Holders, "t0") ||
			!slices.ContainsFunc(s.Checkpoints, func(c fsm.Checkpoint) bool { return slices.Contains(c.Holders, "t1") }) {
			return false
		}
		if slices.Contains(s.Generation.Ring, "t1") {
			return !s.Status.Terminal() && s.Step+run.CheckpointEvery < run.Steps
		}
		return !s.Status.Terminal() || !slices.Contains(s.Checkpoints[n-1].Holders, "t1")
	}
	for {
		waitFor(t, cli, "a checkpoint both trainers hold", 3*time.Minute, bothHold)
		if err := t1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("stopping t1: %v; stderr:\n%s", err, t1.stderr.String())
		}
		at := waitFor(t, cli, "the state", time.Minute, func(*fsm.State) bool { return true })
		if stoppedWell(at) {
			break
		}
		if at.Status.Terminal() {
			t.Fatalf("the run %s at step %d between the look and t1's stop (it had more than %d steps to go at the look)", at.Status, at.Step, run.CheckpointEvery)
		}
		if err := t1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	final := waitFor(t, cli, "the run's success without t1", 3*time.Minute, func(s *fsm.State) bool { return s.Status.Terminal() })
	if final.Status != fsm.StatusSucceeded {
		t.Fatalf("run %s (%s), want succeeded", final.Status, final.Reason)
	}
	select {
	case <-t0.exited:
		if t0.err != nil {
			t.Fatalf("t0: %v; stderr:\n%s", t0.err, t0.stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("t0 did not exit after the run succeeded (log %s)", t0.log)
	}

	if err := t1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-t1.exited:
		if t1.err != nil {
			t.Fatalf("t1 exited with %v, want status 0; stderr:\n%s", t1.err, t1.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("t1 did not exit within 30 s of SIGCONT (log %s)", t1.log)
	}
	if s := t1.stderr.String(); s != "" {
		t.Errorf("t1's stderr %q, want nothing", s)
	}

	// Its volume: the newest committed checkpoint, one the coordinators committed.
	st, err := checkpoint.Open(filepath.Join(strings.TrimSuffix(t1.log, ".log"), trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	held, err := st.LatestCommitted()
	st.Close()
	if err != nil {
		t.Fatalf("t1's volume: %v", err)
	}
	if held.Step < run.CheckpointEvery || held.Step >= run.Steps {
		t.Fatalf("t1's volume holds step %d, want one of %d..%d", held.Step, run.CheckpointEvery, run.Steps-1)
	}
	commit := fmt.Sprintf("checkpoint at step %d committed (%.12s,", held.Step, held.SHA256)
	if !slices.ContainsFunc(final.Events, func(e fsm.Event) bool { return strings.HasPrefix(e.Text, commit) }) {
		t.Errorf("t1's volume holds step %d (%.12s), which the coordinators' timeline does not record as committed", held.Step, held.SHA256)
	}
	if ck := final.Checkpoints[len(final.Checkpoints)-1]; ck.Step != run.Steps || !slices.Equal(ck.Holders, []string{"t0"}) {
		t.Fatalf("the final checkpoint: step %d held by %v, want step %d held by [t0]", ck.Step, ck.Holders, run.Steps)
	}

	// Its last word.
	logText, err := os.ReadFile(t1.log)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(logText), []byte("\n"))
	var last struct {
		Msg        string   `json:"msg"`
		Step       int64    `json:"step"`
		VolumeStep int64    `json:"volume_step"`
		FinalOn    []string `json:"final_on"`
		Note       string   `json:"note"`
	}
	if err := json.Unmarshal(lines[len(lines)-1], &last); err != nil {
		t.Fatalf("t1's last line %q: %v", lines[len(lines)-1], err)
	}
	want := fmt.Sprintf("trainer t1: the run finished at step %d without this trainer; this volume holds step %d; the final checkpoint is on t0", run.Steps, held.Step)
	if last.Msg != trainer.MsgRunComplete || last.Step != run.Steps || last.VolumeStep != held.Step || !slices.Equal(last.FinalOn, []string{"t0"}) || last.Note != want {
		t.Fatalf("t1's last line %s\nwant msg %q step %d volume_step %d final_on [t0] note %q", lines[len(lines)-1], trainer.MsgRunComplete, run.Steps, held.Step, want)
	}
	if n := bytes.Count(logText, []byte(`"msg":"`+trainer.MsgRunComplete+`"`)); n != 1 {
		t.Errorf("t1 logged %d run-complete lines, want 1", n)
	}
}
