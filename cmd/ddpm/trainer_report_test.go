package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestTrainerReportsSurviveCoordinatorOutage runs the trainer's coordinator adapter against a
// real coordinator replica that goes down (Close, as a kill of the only leader) while the
// trainer reports steps 11-20, and comes back on the same data and addresses (a new leader
// election). Every step 1-30 must end up in the replicated loss history, in step order with its
// own loss. Before, a report the coordinators did not answer was dropped, and so were the ones
// made while it was in flight: `ddpm loss` lacked the steps of a leader failover.
func TestTrainerReportsSurviveCoordinatorOutage(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = 40, 20, 1, 1
	run.HeartbeatTimeout = config.Duration(time.Minute)
	certs := tlsauthtest.Dir(t)
	sec := tlsauthtest.Load(t, certs, nil)
	grpcAddr, raftAddr, dataDir := freeAddr(t), freeAddr(t), t.TempDir()
	start := func() *coordinator.Node {
		t.Helper()
		var node *coordinator.Node
		var err error
		// The ports of a closed node may take a moment to be free again.
		for range 50 {
			node, err = coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
				Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: dataDir,
				Bootstrap: true, Run: &run, Version: "test", Security: sec})
			if err == nil {
				return node
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal(err)
		return nil
	}
	node := start()
	defer func() { node.Close() }()
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	j := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "t0", Address: "t0.trainers:7100", Version: "test", ConfigHash: run.Hash()})
	var gen uint64
	for gen == 0 {
		st, err := cli.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Generation.Rank("t0") == 0 {
			gen = st.Generation.Number
		}
		time.Sleep(20 * time.Millisecond)
	}
	logs := &lockedLog{}
	cc := &clusterCoord{cli: cli, id: "t0", addr: "t0.trainers:7100", nonce: "n", log: slog.New(slog.NewTextHandler(logs, nil)),
		reports: trainer.NewReportQueue(trainer.DefaultReportBacklog)}
	cc.inc.Store(j.Incarnation)
	go cc.reportLoop(ctx)

	loss := func(s int64) float64 { return 0.5 + 1/float64(s) }
	step := func(from, to int64) {
		for s := from; s <= to; s++ {
			cc.Report(ctx, trainer.Progress{Step: s, Loss: loss(s), LR: 1e-4, GradNorm: 1, Generation: gen, World: 1,
				LossQuartiles: [4]float64{1, 2, 3, 4}})
			time.Sleep(30 * time.Millisecond) // a step's compute
		}
	}
	points := func() string {
		st, err := cli.State(ctx)
		if err != nil {
			return err.Error()
		}
		var s string
		for _, p := range st.Loss.Points {
			s += fmt.Sprintf("%d:%.6f ", p.Step, p.Loss)
		}
		return s
	}
	want := func(to int64) string {
		var s string
		for i := int64(1); i <= to; i++ {
			s += fmt.Sprintf("%d:%.6f ", i, loss(i))
		}
		return s
	}
	waitPoints := func(to int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for points() != want(to) {
			if time.Now().After(deadline) {
				t.Fatalf("loss history:\n%s\nwant\n%s\nlog:\n%s", points(), want(to), logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	step(1, 10)
	waitPoints(10)
	if err := node.Close(); err != nil {
		t.Fatal(err)
	}
	step(11, 20) // the coordinators do not answer: the steps go on, their reports wait
	node = start()
	step(21, 30)
	waitPoints(30)
	fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
	defer fcancel()
	if !cc.reports.Flush(fctx) || cc.reports.Dropped() != 0 {
		t.Fatalf("queue after delivery: %d queued, %d dropped", cc.reports.Len(), cc.reports.Dropped())
	}
}

// rankedClusterCoord starts a real one-replica coordinator with a 20-step mnist run
// (checkpoint_every 10, one trainer), joins trainer t0 and waits for its rank 0; it returns a
// context of a minute, the client, t0's clusterCoord (report queue of backlog reports, log
// lines into logs; its report loop not started), and the generation.
func rankedClusterCoord(t *testing.T, backlog int) (context.Context, *coordinator.Client, *clusterCoord, uint64, *lockedLog) {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = 20, 10, 1, 1
	_, cli := startReplica(t, run, "test", tlsauthtest.Dir(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	j := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "t0", Address: "t0.trainers:7100", Version: "test", ConfigHash: run.Hash()})
	var gen uint64
	for gen == 0 {
		st, err := cli.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Generation.Rank("t0") == 0 {
			gen = st.Generation.Number
		}
		time.Sleep(20 * time.Millisecond)
	}
	logs := &lockedLog{}
	cc := &clusterCoord{cli: cli, id: "t0", addr: "t0.trainers:7100", nonce: "n", log: slog.New(slog.NewTextHandler(logs, nil)),
		reports: trainer.NewReportQueue(backlog)}
	cc.inc.Store(j.Incarnation)
	return ctx, cli, cc, gen, logs
}

// TestCheckpointReadyWarnsOfOverflowedReports: a trainer whose report queue overflowed (its
// backlog is smaller than the checkpoint interval: checkpoint_every above
// trainer.MaxReportBacklog) delivers what it kept before it reports the checkpoint to a real
// coordinator replica, and says in one log line how many steps before that checkpoint have no
// loss point; the next checkpoint, without new overflow, says nothing.
func TestCheckpointReadyWarnsOfOverflowedReports(t *testing.T) {
	ctx, cli, cc, gen, logs := rankedClusterCoord(t, 2)
	push := func(from, to int64) {
		for s := from; s <= to; s++ {
			cc.Report(ctx, trainer.Progress{Step: s, Loss: 1, LR: 1e-4, GradNorm: 1, Generation: gen, World: 1})
		}
	}
	push(1, 10) // no coordinator answer yet: steps 1-8 overflow a backlog of 2
	go cc.reportLoop(ctx)
	sha := strings.Repeat("ab", 32)
	_ = cc.CheckpointReady(ctx, gen, 10, sha, 1)
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, p := range st.Loss.Points {
		steps = append(steps, p.Step)
	}
	if fmt.Sprint(steps) != "[9 10]" {
		t.Fatalf("loss history steps %v when checkpoint 10 was reported, want [9 10]", steps)
	}
	warn := `level=WARN msg="progress reports dropped unsent (the queue was full while no coordinator answered): ddpm loss has no point for those steps before this checkpoint" reports=8 checkpoint=10`
	if got := logs.String(); strings.Count(got, "progress reports dropped unsent") != 1 || !strings.Contains(got, warn) {
		t.Fatalf("log:\n%s\nwant one line ending %q", got, warn)
	}
	push(11, 12)
	_ = cc.CheckpointReady(ctx, gen, 12, sha, 1)
	if n := strings.Count(logs.String(), "progress reports dropped unsent"); n != 1 {
		t.Fatalf("%d overflow warnings after a checkpoint without overflow, want 1:\n%s", n, logs)
	}
}

// TestSkippedStepReported: the report of a step skipped for a non-finite gradient (loss NaN,
// gradient norm +Inf) reaches the real coordinator replica with skipped set and becomes a point
// marked skipped, without a loss, between its neighbours' points: it used to be held back (the
// coordinators refused non-finite values), so `ddpm loss` had no mark for the step. A report
// with a recorded metric that is not finite (here the loss of a step not marked skipped) is
// still not sent, which would make the leader fail to encode its raft command; the trainer logs
// one line naming the step and the field.
func TestSkippedStepReported(t *testing.T) {
	ctx, cli, cc, gen, logs := rankedClusterCoord(t, trainer.DefaultReportBacklog)
	go cc.reportLoop(ctx)
	nan := math.NaN()
	cc.Report(ctx, trainer.Progress{Step: 1, Loss: 0.5, LR: 1e-4, GradNorm: 1, Generation: gen, World: 1, LossQuartiles: [4]float64{1, nan, 3, 4}})
	cc.Report(ctx, trainer.Progress{Step: 2, Loss: nan, LR: 2e-4, GradNorm: math.Inf(1), Skipped: true, Generation: gen, World: 1,
		LossQuartiles: [4]float64{nan, nan, nan, nan}})
	cc.Report(ctx, trainer.Progress{Step: 3, Loss: 0.25, LR: 1e-4, GradNorm: 1, Generation: gen, World: 1})
	cc.Report(ctx, trainer.Progress{Step: 4, Loss: nan, LR: 1e-4, GradNorm: 1, Generation: gen, World: 1})
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	if !cc.reports.Flush(fctx) {
		t.Fatalf("reports not delivered: %d queued", cc.reports.Len())
	}
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pts []string
	for _, p := range st.Loss.Points {
		pts = append(pts, fmt.Sprintf("%d:%v:skipped=%d:lr=%v", p.Step, p.Loss, p.Skipped, p.LR))
	}
	if got, want := fmt.Sprint(pts), "[1:0.5:skipped=0:lr=0.0001 2:0:skipped=1:lr=0.0002 3:0.25:skipped=0:lr=0.0001]"; got != want {
		t.Fatalf("loss history %s, want %s", got, want)
	}
	want := `level=WARN msg="step with non-finite metrics not reported to the coordinators: the loss history has no point for it" step=4 field=loss value=NaN skipped=false`
	if got := logs.String(); strings.Count(got, "non-finite") != 1 || !strings.Contains(got, want) {
		t.Fatalf("log:\n%s\nwant one line ending %q", got, want)
	}
}
