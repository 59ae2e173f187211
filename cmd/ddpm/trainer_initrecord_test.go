package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestSampleEMAWarningInitTrainer: a standalone trainer given --init records the weights in its
// volume (init.txt: their absolute path), and `ddpm sample` of its step-2 checkpoint does not
// call the EMA a random start; the volume of a trainer without --init has no record and gets
// the warning once. Before, sample looked only for a ddpm local run's local.json and warned of
// both volumes alike ("from a random start they draw mostly noise"), though the first one's
// EMA is mostly the --init weights.
func TestSampleEMAWarningInitTrainer(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	init, err := filepath.Abs(filepath.Join("..", "..", "demo", "mnist-tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	train := func(vol string, extra ...string) {
		args := append([]string{"trainer", "--standalone", "--preset", "mnist", "--steps", "2", "--checkpoint-every", "1",
			"--global-batch", "4", "--t", "20", "--data-dir", vol}, extra...)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	warning := "ddpm sample: warning: the EMA weights of step 2 (ema_decay 0.999) still hold 100% of the step-0 weights (0.999^2); from a random start they draw mostly noise: give --raw to sample the raw parameters\n"
	for _, c := range []struct {
		name string
		args []string
		want int
	}{{"warm", []string{"--init", init}, 0}, {"cold", nil, 1}} {
		vol := filepath.Join(root, c.name)
		train(vol, c.args...)
		rec, err := os.ReadFile(filepath.Join(vol, trainer.InitFile))
		if c.want == 0 && (err != nil || string(rec) != init+"\n") {
			t.Fatalf("%s: %s: %q, %v; want %q", c.name, trainer.InitFile, rec, err, init+"\n")
		}
		if c.want == 1 && !os.IsNotExist(err) {
			t.Fatalf("%s: %s: %q, %v; want none", c.name, trainer.InitFile, rec, err)
		}
		var stderr bytes.Buffer
		if _, err := runCLI(t, ctx, &stderr, "sample", "--checkpoint", vol, "--n", "1", "--out", filepath.Join(root, c.name+".png")); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(stderr.String(), warning); n != c.want {
			t.Errorf("%s: the warning %d times, want %d, in:\n%s", c.name, n, c.want, stderr.String())
		}
		if done := " step 2 (EMA) in "; !strings.Contains(stderr.String(), done) {
			t.Errorf("%s: no %q in:\n%s", c.name, done, stderr.String())
		}
	}
}
