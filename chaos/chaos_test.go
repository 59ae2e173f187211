package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ddpm/config"
)

var (
	buildOnce sync.Once
	binPath   string
	binErr    error
)

// ddpmBinary builds the ddpm binary once per test process.
func ddpmBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("chaos: real processes; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ddpm-chaos-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "ddpm")
		out, err := exec.Command("go", "build", "-o", binPath, "ddpm/cmd/ddpm").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build ./cmd/ddpm: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// tinyRun is the mnist preset cut down to a short run of the tiny U-Net (about 0.3 s a step on
// two cores): global batch 8, T = 50, a checkpoint every 4 steps, a 2 s heartbeat timeout.
func tinyRun(t *testing.T, steps int64, seed uint64) config.Run {
	t.Helper()
	r, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	r.Steps, r.GlobalBatch, r.LR, r.WarmupSteps, r.CheckpointEvery, r.Seed = steps, 8, 1e-3, 2, 4, seed
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
		{Kind: StopTrainer, AtStep: 26, Trainer: 1, Down: 5 * time.Second},
	})
}
