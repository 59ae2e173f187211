package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
)

// ddpmBinary is the real binary, built once per test process.
func ddpmBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos: real processes; skipped with -short")
	}
	return testutil.DDPMBinary(t)
}

// tinyRun is the mnist preset cut down to a short run of the tiny U-Net (about 0.3 s a step on
// two cores): global batch 8, T = 50, a checkpoint every 4 steps, a 2 s heartbeat timeout. It
// turns on dropout and random flips, which the preset leaves off, so that the bitwise checks
// after a fault cover every per-sample draw (a mask or flip keyed by anything that changes
// across a restart, such as the generation, would differ from the reference run).
func tinyRun(t *testing.T, steps int64, seed uint64) config.Run {
	t.Helper()
	r, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	r.Steps, r.GlobalBatch, r.LR, r.WarmupSteps, r.CheckpointEvery, r.Seed = steps, 8, 1e-3, 2, 4, seed
	r.Dropout, r.Flip = 0.1, true
	r.T, r.BetaStart, r.BetaEnd = 50, 0.002, 0.4
	r.HeartbeatTimeout = config.Duration(2 * time.Second)
	return r
}

// runDir is a fresh directory that is kept (and named in the log) when the test fails.
func runDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ddpm-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("run directories kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func logf(t *testing.T) func(string, ...any) {
	return func(f string, a ...any) { t.Logf(f, a...) }
}

// runPair runs the reference (no faults) and the chaos run of the same config and checks them.
func runPair(t *testing.T, cfg Config, schedule []Fault) *Report {
	t.Helper()
	ctx := context.Background()
	dir := cfg.Dir
	ref := cfg
	ref.Dir, ref.Logf, ref.Netns = filepath.Join(dir, "reference"), nil, false
	refRep, err := Run(ctx, ref, nil)
	if err != nil {
		t.Fatalf("reference run: %v", err)
	}
	cfg.Dir = filepath.Join(dir, "chaos")
	rep, err := Run(ctx, cfg, schedule)
	summarize(t, rep)
	if err != nil {
		t.Fatalf("chaos run: %v\nlogs: %s", err, filepath.Join(cfg.Dir, "logs"))
	}
	if err := Check(refRep, rep, cfg.Run.Steps); err != nil {
		t.Fatal(err)
	}
	t.Logf("final state bitwise equal to the uninterrupted run on all %d trainers (step %d, params sha256 %x...); %d committed checkpoints verified",
		len(rep.Final), rep.Final[0].Step, rep.Final[0].Params[:8], rep.Verified)
	return rep
}

func summarize(t *testing.T, rep *Report) {
	t.Helper()
	if rep == nil {
		return
	}
	ms := func(d time.Duration) string {
		if d < 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	for _, r := range rep.Recoveries {
		t.Logf("%-44s detected %-6s new leader %-6s restored %-6s resumed %-6s from step %d, redone %d  %s",
			r.Fault.String()+" ("+r.Target+")", ms(r.Detected), ms(r.NewLeader), ms(r.Restored), ms(r.Resumed), r.ResumedFrom, r.Redone, r.Note)
	}
	for _, e := range rep.Events {
		if e.Kind != "checkpoint" {
			t.Logf("event %s gen %d %s: %s", time.Unix(0, e.Time).Format("15:04:05.000"), e.Generation, e.Kind, e.Text)
		}
	}
}

// TestChaosShort is the variant `make test` runs: one run of 2 trainers and 3 coordinators
// that meets every kind of failure once.
func TestChaosShort(t *testing.T) {
	bin := ddpmBinary(t)
	cfg := Config{Bin: bin, Dir: runDir(t), Run: tinyRun(t, 40, 11), Trainers: 2, Coordinators: 3,
		Deadline: 4 * time.Minute, Logf: logf(t)}
	runPair(t, cfg, []Fault{
		{Kind: KillTrainer, AtStep: 6, Trainer: 1, Down: time.Second, Corrupt: true},
		{Kind: KillLeader, AtStep: 13, Down: 2 * time.Second},
		{Kind: KillInCheckpoint, AtStep: 18, Trainer: 0, Down: time.Second},
		// Stopped past the heartbeat timeout and the coordinator's 3 s grace for unknown
		// watchers: the trainer's assignment stream ends with unknown_member while it sleeps.
		{Kind: StopTrainer, AtStep: 26, Trainer: 1, Down: 7 * time.Second},
	})
}

// longChaos skips unless DDPM_CHAOS is set (make chaos).
func longChaos(t *testing.T) {
	t.Helper()
	if os.Getenv("DDPM_CHAOS") == "" {
		t.Skip("long chaos runs: set DDPM_CHAOS=1 (make chaos)")
	}
}

// TestChaosRandom runs random schedules (every kind of failure but link cuts) against 3
// trainers and 3 coordinators; DDPM_CHAOS_RUNS sets how many (default 3).
func TestChaosRandom(t *testing.T) {
	longChaos(t)
	bin := ddpmBinary(t)
	runs := 3
	if v, err := strconv.Atoi(os.Getenv("DDPM_CHAOS_RUNS")); err == nil && v > 0 {
		runs = v
	}
	kinds := []Kind{KillTrainer, KillLeader, KillInCheckpoint, StopTrainer}
	run := tinyRun(t, 64, 23)
	dir := runDir(t)
	ref, err := Run(context.Background(), Config{Bin: bin, Dir: filepath.Join(dir, "reference"), Run: run, Trainers: 3, Coordinators: 3}, nil)
	if err != nil {
		t.Fatalf("reference run: %v", err)
	}
	survived := 0
	var all []Recovery
	for i := range runs {
		seed := uint64(1000 + i)
		sched := RandomSchedule(seed, run, 3, 5, kinds)
		ok := t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			for _, f := range sched {
				t.Logf("scheduled: %s", f)
			}
			cfg := Config{Bin: bin, Dir: filepath.Join(dir, fmt.Sprintf("seed%d", seed)), Run: run, Trainers: 3, Coordinators: 3,
				Deadline: 8 * time.Minute, Logf: logf(t)}
			rep, err := Run(context.Background(), cfg, sched)
			summarize(t, rep)
			if rep != nil {
				all = append(all, rep.Recoveries...)
			}
			if err != nil {
				t.Fatalf("chaos run: %v", err)
			}
			if err := Check(ref, rep, run.Steps); err != nil {
				t.Fatal(err)
			}
		})
		if ok {
			survived++
		}
	}
	figures(t, all, run.CheckpointEvery)
	t.Logf("runs survived: %d/%d", survived, runs)
}

// figures logs the figures over recoveries.
func figures(t *testing.T, rs []Recovery, every int64) {
	t.Helper()
	type agg struct {
		n, without         int
		det, res, sinceRst []float64
		redone             []int64
		leader             []float64
	}
	by := map[Kind]*agg{}
	for _, r := range rs {
		if r.Target == "" {
			continue
		}
		a := by[r.Fault.Kind]
		if a == nil {
			a = &agg{}
			by[r.Fault.Kind] = a
		}
		a.n++
		if r.Detected >= 0 {
			a.det = append(a.det, r.Detected.Seconds())
		}
		if r.Resumed >= 0 {
			a.res = append(a.res, r.Resumed.Seconds())
			switch {
			case r.Fault.Kind == KillLeader:
			case r.Resumed < r.Restored:
				// Elastic runs: the peers resumed without the target before it came back, so
				// there is no time from restore to resume to report.
				a.without++
			default:
				a.sinceRst = append(a.sinceRst, (r.Resumed - r.Restored).Seconds())
			}
		}
		if r.NewLeader >= 0 {
			a.leader = append(a.leader, r.NewLeader.Seconds())
		}
		a.redone = append(a.redone, r.Redone)
	}
	mm := func(xs []float64) string {
		if len(xs) == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f/%.2f/%.2fs", slices.Min(xs), median(xs), slices.Max(xs))
	}
	t.Logf("figures (min/median/max) over %d faults, checkpoint every %d steps:", len(rs), every)
	for _, k := range []Kind{KillTrainer, KillInCheckpoint, StopTrainer, LinkDown, KillLeader} {
		a := by[k]
		if a == nil {
			continue
		}
		t.Logf("  %-19s n=%-2d detected %-18s resumed after fault %-18s after restore %-18s (resumed before restore: %d) new leader %-18s steps redone max %d",
			k, a.n, mm(a.det), mm(a.res), mm(a.sinceRst), a.without, mm(a.leader), slices.Max(a.redone))
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestChaosNetns runs the trainers in network namespaces of their own (veth pairs on a bridge),
// so ring traffic crosses real interfaces, and cuts one trainer's link mid-run, then restores it.
func TestChaosNetns(t *testing.T) {
	longChaos(t)
	if err := NetnsAvailable(); err != nil {
		t.Skipf("network-namespace variant skipped: %v", err)
	}
	bin := ddpmBinary(t)
	cfg := Config{Bin: bin, Dir: runDir(t), Run: tinyRun(t, 40, 31), Trainers: 2, Coordinators: 3, Netns: true,
		Deadline: 5 * time.Minute, Logf: logf(t)}
	rep := runPair(t, cfg, []Fault{
		{Kind: LinkDown, AtStep: 6, Trainer: 1, Down: 5 * time.Second},
		{Kind: KillTrainer, AtStep: 18, Trainer: 0, Down: time.Second, Corrupt: true},
		{Kind: LinkDown, AtStep: 28, Trainer: 0, Down: 3 * time.Second},
	})
	figures(t, rep.Recoveries, cfg.Run.CheckpointEvery)
}

// TestChaosElastic lets generations shrink (min_trainers 1): a dead trainer's peers resume
// without it after the heartbeat timeout, and it rejoins at the next committed checkpoint. This
// measures the time from a trainer's death to training resumed without waiting for a restart.
// The last fault (trainer-0 stopped for 6 s at step 72) often outlasts the run: the others
// finish, and trainer-0 comes back to a finished run, exits 0 with one line naming its committed
// step and the final checkpoint's holders, and keeps that step on its volume (Consistent).
func TestChaosElastic(t *testing.T) {
	longChaos(t)
	bin := ddpmBinary(t)
	// Training goes on while a trainer is down, and a fault is injected only after the previous
	// one's downtime: the faults are spaced for 6 s of training at up to ~8 steps a second (two
	// ranks of the tiny model on an idle machine; 100 steps with the last fault at 72 finished
	// while the second fault's trainer was still down).
	run := tinyRun(t, 200, 41)
	cfg := Config{Bin: bin, Dir: runDir(t), Run: run, Trainers: 3, Coordinators: 3, Elastic: true,
		Deadline: 6 * time.Minute, Logf: logf(t)}
	rep, err := Run(context.Background(), cfg, []Fault{
		{Kind: KillTrainer, AtStep: 10, Trainer: 2, Down: 6 * time.Second},
		{Kind: KillInCheckpoint, AtStep: 64, Trainer: 1, Down: 6 * time.Second, Corrupt: true},
		{Kind: StopTrainer, AtStep: 140, Trainer: 0, Down: 6 * time.Second},
	})
	summarize(t, rep)
	if err != nil {
		t.Fatalf("elastic chaos run: %v", err)
	}
	behind, err := Consistent(rep, run.Steps)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range behind {
		t.Log(b)
	}
	t.Logf("%d of %d trainers hold the final checkpoint (step %d, sha256 %.12s); %d ended behind; %d committed checkpoints verified",
		len(rep.Final)-len(behind), len(rep.Final), run.Steps, rep.Committed[len(rep.Committed)-1].SHA256, len(behind), rep.Verified)
	figures(t, rep.Recoveries, run.CheckpointEvery)
}
