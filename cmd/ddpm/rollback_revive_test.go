package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
)

// TestRollbackRevivesFailedRun: a run failed by a trainer's failure report (its volume full) is
// shown as failed with the trainer's last step and the command that revives it (not as
// "restarting from the last committed checkpoint"); `ddpm checkpoint rollback --to-step` its
// newest committed checkpoint revives it, abandoning nothing, and the trainer joins again.
// Before: "at step 0", a "restarting" note beside "RUN failed", and the rollback refused with
// "a finished run is not rolled back".
func TestRollbackRevivesFailedRun(t *testing.T) {
	addr, cli, gen := startMonitoredNode(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sha := strings.Repeat("ab", 32)
	if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "trainer-a", Generation: gen, Step: 10, Sha256: sha, Size: 10}); err != nil {
		t.Fatal(err)
	}
	report(t, cli, gen, 11, 14)
	if _, err := cli.ReportProgress(ctx, &api.ReportProgressRequest{Id: "trainer-a", Generation: gen,
		Failure: "save checkpoint 20: no space left on device"}); err != nil {
		t.Fatal(err)
	}
	reason := "trainer trainer-a at step 14: save checkpoint 20: no space left on device"
	out, err := runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"RUN failed: " + reason + " step 14 / 20 (70.0%) revive ddpm checkpoint rollback --coordinator " + addr +
		" --to-step 10 --yes --certs " + monitorCerts + ", then start the trainers that stopped preset"} {
		if !strings.Contains(flat, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	// The state the tester saw: a generation broke (step back at checkpoint 40, losses to 60),
	// then the run failed. It is not "restarting".
	st := &fsm.State{Status: fsm.StatusFailed, Reason: reason, Step: 40, TotalSteps: 100,
		Checkpoints: []fsm.Checkpoint{{Step: 40, SHA256: sha, Holders: []string{"trainer-a"}}}}
	cfg, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	st.Run = &cfg
	st.Loss.Add(fsm.LossPoint{Step: 60, Loss: 0.1})
	var buf bytes.Buffer
	if err := writeStatus(&buf, &api.StatusResponse{ReplicaId: "c0", LeaderId: "c0", Replicas: []string{"127.0.0.1:7001"}}, st, "--insecure"); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(buf.String(), "\n"); len(lines) < 3 || strings.Join(strings.Fields(lines[1]), " ") != "step 40 / 100 (40.0%)" ||
		strings.Join(strings.Fields(lines[2]), " ") != "revive ddpm checkpoint rollback --coordinator 127.0.0.1:7001 --to-step 40 --yes --insecure, then start the trainers that stopped" {
		t.Fatalf("status of a failed run whose generation broke:\n%s", buf.String())
	}
	rollbackFlags.coordinator, rollbackFlags.toStep, rollbackFlags.yes, rollbackFlags.timeout = "", -1, false, 10*time.Second
	checkpointRollbackCmd.Flags().VisitAll(func(f *pflag.Flag) { f.Changed = false })
	out, err = runDDPM(t, "checkpoint", "rollback", "--coordinator", addr, "--certs", monitorCerts, "--to-step", "10", "--yes")
	if err != nil {
		t.Fatalf("rollback of the failed run: %v\n%s", err, out)
	}
	lines := strings.Split(out, "\n")
	want := []string{"revives the failed run (" + reason + ")",
		"the run restarts from checkpoint 10 (sha256 abababababababab, held by trainer-a)",
		"steps 11-14 are computed again (their loss history is dropped)"}
	if len(lines) != 5 || strings.Join(lines[:3], "\n") != strings.Join(want, "\n") || !strings.HasPrefix(lines[3], "rolled back: generation ") ||
		!strings.HasSuffix(lines[3], " restarts the run from step 10") {
		t.Fatalf("rollback output:\n%s\nwant\n%s\nrolled back: generation N restarts the run from step 10", out, strings.Join(want, "\n"))
	}
	out, err = runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "RUN ") || strings.Fields(out)[1] != "running" || strings.Contains(out, "revive") {
		t.Fatalf("status after the revival:\n%s", out)
	}
	run := monitoredRun(t)
	if _, err := cli.Join(ctx, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test",
		ConfigHash: run.Hash()}); err != nil {
		t.Fatalf("join after the revival: %v", err)
	}
}
