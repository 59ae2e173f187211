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
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
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

// TestClusterTrainerJoinsTestSplitRun: a cluster trainer given no run config joins the run the
// coordinators hold even on a test split (a run an older coordinator accepted): the refusal is
// for a run the trainer would start. It exited 2 ('names the test split'), and the run could get
// no trainer. Here it trains the 4 steps and exits 0 with the run succeeded.
func TestClusterTrainerJoinsTestSplitRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, _ := procRun(t, dir, 4, 1, 1, 5*time.Second, func(r *config.Run) { r.Dataset = "mnist:test" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t0", "--coordinator", coord, "--listen", freeAddr(t),
		"--data-dir", filepath.Join(dir, "t0"), "--certs", certs)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("cluster trainer joining the coordinators' mnist:test run: %v\n%s", err, out.String())
	}
	st := waitFor(t, cli, "the run's end", 30*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if st.Status != fsm.StatusSucceeded {
		t.Errorf("run %s (%s), want succeeded", st.Status, st.Reason)
	}
}
