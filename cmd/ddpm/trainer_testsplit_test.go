package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"ddpm/config"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerTestSplitVolumeContinues: a standalone trainer volume an older version bound to a
// run on mnist:test (run.yaml records it) is continued, not refused: the test-split refusal is
// for a new run (TestTrainerStandaloneDataset), and refusing the volume's own run left it no way
// on. The restart trains the run to its end, exit 0.
func TestTrainerTestSplitVolumeContinues(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	args := []string{"--dataset", "mnist:test", "--preset", "mnist", "--steps", "1", "--checkpoint-every", "1", "--global-batch", "4"}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	rf := config.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	run, err := rf.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(t.TempDir(), "vol")
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"trainer", "--standalone", "--data-dir", vol}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("trainer --standalone on a volume bound to the mnist:test run: %v\n%s", err, out.String())
	}
	if _, err := os.Stat(filepath.Join(vol, trainer.CheckpointFile)); err != nil {
		t.Errorf("no checkpoint file after the run: %v", err)
	}
}
