package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestTrainerUncommitsForgottenAbandoned runs the trainer's coordinator adapter against a real
// coordinator replica (keep_checkpoints 2, a checkpoint every 4 steps). The old line commits 4,
// 8, 12 and 16 (adopted from members' volumes); keep 2 leaves 12 and 16 listed. A rollback to
// h's copy of 4 abandons 12 and 16 by sha256 and the pruned 8 only by step (the forgotten
// range 5..8). The new line commits its own 8, 12 and 16, which pushes its 8 out of the list.
// A standby s holding the old 4 and 8 has 8 uncommitted when the rollback's assignment comes;
// a trainer t back afterwards with the old 4..16 keeps only 4 (the rollback's own target)
// committed, with one log line per uncommitted step; u's copy of the new line's 8 stays
// committed. Before, the old 8 stayed committed on s's and t's volumes (the cluster refused it,
// but `ddpm sample` and `checkpoint export` of the volume took it as the newest).
func TestTrainerUncommitsForgottenAbandoned(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.KeepCheckpoints, run.MinTrainers, run.MaxTrainers = 20, 4, 2, 1, 1
	run.HeartbeatTimeout = config.Duration(time.Minute)
	_, cli := startReplica(t, run, "test", tlsauthtest.Dir(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	_, old := volumeWith(t, []int64{4, 8, 12, 16}, []float32{1, 1, 1, 1})
	sVol, _ := volumeWith(t, []int64{4, 8}, []float32{1, 1})
	tVol, _ := volumeWith(t, []int64{4, 8, 12, 16}, []float32{1, 1, 1, 1})
	uVol, fresh := volumeWith(t, []int64{8}, []float32{5})
	_, fresh2 := volumeWith(t, []int64{12, 16}, []float32{5, 5})
	fresh[12], fresh[16] = fresh2[12], fresh2[16]
	req := func(id string, held ...int64) coordinator.JoinRequest {
		r := coordinator.JoinRequest{ID: id, Address: id + ".trainers:7100", Version: "test", ConfigHash: run.Hash()}
		for _, s := range held {
			r.Held = append(r.Held, fsm.Held{Step: s, SHA256: old[s]})
		}
		return r
	}
	joinWhenLeading(t, cli, req("h", 4))
	for _, step := range []int64{8, 12, 16} {
		if _, err := cli.Join(ctx, req(fmt.Sprint("g", step), step)); err != nil {
			t.Fatal(err)
		}
	}
	newCoord := func(id string, st *checkpoint.Store) (*clusterCoord, *lockedLog) {
		logs := &lockedLog{}
		return &clusterCoord{cli: cli, id: id, addr: id + ".trainers:7100", nonce: coordinator.NewProcessNonce(), store: st,
			log: slog.New(slog.NewTextHandler(logs, nil)), reports: trainer.NewReportQueue(trainer.DefaultReportBacklog)}, logs
	}
	sc, sLog := newCoord("s", sVol)
	if err := sc.join(ctx, req("s", 4, 8)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Assignments(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Checkpoints) != 2 || st.Checkpoints[0].Step != 12 || st.Checkpoints[1].Step != 16 || st.Generation.Rank("s") >= 0 {
		t.Fatalf("before the rollback: checkpoints %+v, ring %v; want 12 and 16 committed, s standing by", st.Checkpoints, st.Generation.Ring)
	}
	time.Sleep(200 * time.Millisecond) // s's watch has seen the assignment before the rollback
	if got := committedSteps(t, sVol); !slices.Equal(got, []int64{4, 8}) {
		t.Fatalf("s's committed steps before the rollback: %v, want [4 8]", got)
	}

	if _, err := cli.RollbackRun(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if st, err = cli.State(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.AbandonedRanges, []fsm.StepRange{{Above: 4, UpTo: 8}}) || len(st.Generation.Ring) != 1 {
		t.Fatalf("after the rollback: forgotten ranges %v, ring %v; want [{4 8}], one rank", st.AbandonedRanges, st.Generation.Ring)
	}
	// The log line follows the uncommit: wait for both.
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(committedSteps(t, sVol), []int64{4}) ||
		!strings.Contains(sLog.String(), "step=8"); {
		if time.Now().After(deadline) {
			t.Fatalf("standby s still holds %v as committed after the rollback, want [4]; log:\n%s", committedSteps(t, sVol), sLog)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The new line: the ring's rank commits its own 8, 12 and 16.
	rank, gen := st.Generation.Ring[0], st.Generation.Number
	for _, step := range []int64{8, 12, 16} {
		if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: rank, Generation: gen, Step: step, Sha256: fresh[step], Size: 64}); err != nil {
			t.Fatal(err)
		}
	}
	if st, err = cli.State(ctx); err != nil {
		t.Fatal(err)
	}
	if len(st.Checkpoints) != 2 || st.Checkpoints[1].SHA256 != fresh[16] || !slices.Contains(st.Recommitted, fsm.Held{Step: 8, SHA256: fresh[8]}) {
		t.Fatalf("the new line: checkpoints %+v, recommitted %v; want 12 and 16 listed, the new 8 recommitted", st.Checkpoints, st.Recommitted)
	}

	tc, tLog := newCoord("t", tVol)
	if err := tc.join(ctx, req("t", 4, 8, 12, 16)); err != nil {
		t.Fatal(err)
	}
	if got := committedSteps(t, tVol); !slices.Equal(got, []int64{4}) {
		t.Fatalf("t's committed steps after its join: %v, want [4]\nlog:\n%s", got, tLog)
	}
	uc, uLog := newCoord("u", uVol)
	if err := uc.join(ctx, coordinator.JoinRequest{ID: "u", Address: "u.trainers:7100", Version: "test", ConfigHash: run.Hash(),
		Held: []fsm.Held{{Step: 8, SHA256: fresh[8]}}}); err != nil {
		t.Fatal(err)
	}
	if got := committedSteps(t, uVol); !slices.Equal(got, []int64{8}) || strings.Contains(uLog.String(), trainer.MsgUncommittedAbandoned) {
		t.Fatalf("u's committed steps after its join: %v, want [8] untouched; log:\n%s", got, uLog)
	}
	why8 := `why="the run was rolled back to step 4 past steps 5..8, whose abandoned checkpoints the cluster no longer lists; this volume's copy is no restart point and not the run's model"`
	for name, want := range map[string][]int64{"s": {8}, "t": {8, 12, 16}} {
		text := map[string]*lockedLog{"s": sLog, "t": tLog}[name].String()
		if n := strings.Count(text, trainer.MsgUncommittedAbandoned); n != len(want) {
			t.Fatalf("%s's log has %d uncommit lines, want %d (steps %v):\n%s", name, n, len(want), want, text)
		}
		for _, s := range want {
			if !strings.Contains(text, fmt.Sprintf("step=%d sha256=", s)+old[s]) {
				t.Fatalf("%s's log names no uncommit of step %d:\n%s", name, s, text)
			}
		}
		if !strings.Contains(text, "step=8 sha256="+old[8]+" "+why8) {
			t.Fatalf("%s's log: the line of step 8 lacks\n%s\n%s", name, why8, text)
		}
	}
}
