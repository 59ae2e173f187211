package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// volumeWith opens a fresh checkpoint store holding one small checkpoint per step of steps,
// each marked committed; params[i] varies the contents (so the sha256) of steps[i]. It returns
// the store and the sha256 of each step.
func volumeWith(t *testing.T, steps []int64, params []float32) (*checkpoint.Store, map[int64]string) {
	t.Helper()
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "c.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	shas := map[int64]string{}
	for i, s := range steps {
		arena := func() []float32 { return []float32{params[i], float32(s), 1, 2} }
		sha, err := st.Save(&checkpoint.Checkpoint{Step: s, Generation: 1, Preset: "mnist",
			Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{4}, Len: 4}},
			Params:  arena(), EMA: arena(), AdamM: arena(), AdamV: arena(), RNG: []byte{1}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(s); err != nil {
			t.Fatal(err)
		}
		shas[s] = sha
	}
	return st, shas
}

// lockedLog is a text logger whose output a test reads while goroutines write it.
type lockedLog = testutil.SyncBuffer

// committedSteps is st.Committed, failing t on an error.
func committedSteps(t *testing.T, st *checkpoint.Store) []int64 {
	t.Helper()
	got, err := st.Committed()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestTrainerUncommitsAbandonedCheckpoints runs the trainer's coordinator adapter against a real
// coordinator replica. Checkpoints 4 (held by h) and 8 (held by g) are committed, then the run
// is rolled back to 4: 8 is abandoned. A standby s that joined before the rollback and holds 8
// with its committed sha256 has it uncommitted from the assignment the rollback changes; a
// trainer t restarted afterwards with such a volume has it uncommitted at its join, before
// anything else reads the volume, with one log line; a volume whose step 8 has another sha256
// (a recomputed one) keeps it committed, as it keeps 4. Before, only a trainer put in a ring
// after the rollback uncommitted 8: the others' volumes offered the abandoned model to sample,
// eval and export as the run's newest.
func TestTrainerUncommitsAbandonedCheckpoints(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.MinTrainers, run.MaxTrainers = 20, 4, 1, 1
	run.HeartbeatTimeout = config.Duration(time.Minute)
	_, cli := startReplica(t, run, "test", tlsauthtest.Dir(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	sVol, shas := volumeWith(t, []int64{4, 8}, []float32{1, 2})
	tVol, _ := volumeWith(t, []int64{4, 8}, []float32{1, 2})
	uVol, ushas := volumeWith(t, []int64{4, 8}, []float32{1, 3})
	if ushas[8] == shas[8] {
		t.Fatal("the recomputed step 8 hashes as the abandoned one")
	}
	req := func(id string, held ...int64) coordinator.JoinRequest {
		r := coordinator.JoinRequest{ID: id, Address: id + ".trainers:7100", Version: "test", ConfigHash: run.Hash()}
		for _, s := range held {
			r.Held = append(r.Held, fsm.Held{Step: s, SHA256: shas[s]})
		}
		return r
	}
	joinWhenLeading(t, cli, req("h", 4))
	if _, err := cli.Join(ctx, req("g", 8)); err != nil {
		t.Fatal(err)
	}
	newCoord := func(id string, st *checkpoint.Store) (*clusterCoord, *lockedLog) {
		logs := &lockedLog{}
		return &clusterCoord{cli: cli, id: id, addr: id + ".trainers:7100", nonce: coordinator.NewProcessNonce(), store: st,
			log: slog.New(slog.NewTextHandler(logs, nil)), reports: trainer.NewReportQueue(trainer.DefaultReportBacklog)}, logs
	}
	// s stands by (max_trainers 1) and watches its assignment.
	sc, sLog := newCoord("s", sVol)
	if err := sc.join(ctx, req("s", 8)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Assignments(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Checkpoints) != 2 || st.Checkpoints[1].Step != 8 || st.Checkpoints[1].SHA256 != shas[8] || st.Generation.Rank("s") >= 0 {
		t.Fatalf("before the rollback: checkpoints %+v, ring %v; want 4 and 8 committed, s standing by", st.Checkpoints, st.Generation.Ring)
	}
	time.Sleep(200 * time.Millisecond) // s's watch has seen the assignment before the rollback
	if got := committedSteps(t, sVol); !slices.Equal(got, []int64{4, 8}) {
		t.Fatalf("s's committed steps before the rollback: %v, want [4 8]", got)
	}

	if _, err := cli.RollbackRun(ctx, 4); err != nil {
		t.Fatal(err)
	}
	// The log line follows the uncommit: wait for both.
	for committedSteps(t, sVol)[len(committedSteps(t, sVol))-1] != 4 || !strings.Contains(sLog.String(), trainer.MsgUncommittedAbandoned) {
		if ctx.Err() != nil {
			t.Fatalf("standby s still holds step 8 as committed after the rollback; log:\n%s", sLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := committedSteps(t, sVol); !slices.Equal(got, []int64{4}) {
		t.Fatalf("s's committed steps after the rollback: %v, want [4]", got)
	}

	// t comes back after the rollback: its join's answer names 8, uncommitted at once.
	tc, tLog := newCoord("t", tVol)
	if err := tc.join(ctx, req("t", 4, 8)); err != nil {
		t.Fatal(err)
	}
	if got := committedSteps(t, tVol); !slices.Equal(got, []int64{4}) {
		t.Fatalf("t's committed steps after its join: %v, want [4]\nlog:\n%s", got, tLog)
	}
	if c, err := tVol.LatestCommitted(); err != nil || c.Step != 4 {
		t.Fatalf("t's newest committed checkpoint: %v, %v; want step 4", c, err)
	}
	for name, l := range map[string]*lockedLog{"s": sLog, "t": tLog} {
		text := l.String()
		if n := strings.Count(text, trainer.MsgUncommittedAbandoned); n != 1 || !strings.Contains(text, "step=8 sha256="+shas[8]) {
			t.Fatalf("%s's log has %d uncommit lines, want 1 naming step 8 and its sha256:\n%s", name, n, text)
		}
	}
	// A volume whose step 8 is another checkpoint than the abandoned one keeps it.
	uc, uLog := newCoord("u", uVol)
	if err := uc.join(ctx, coordinator.JoinRequest{ID: "u", Address: "u.trainers:7100", Version: "test", ConfigHash: run.Hash()}); err != nil {
		t.Fatal(err)
	}
	if got := committedSteps(t, uVol); !slices.Equal(got, []int64{4, 8}) || strings.Contains(uLog.String(), trainer.MsgUncommittedAbandoned) {
		t.Fatalf("u's committed steps after its join: %v, want [4 8] untouched; log:\n%s", got, uLog)
	}
}
