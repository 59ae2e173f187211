package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerDataDirIsRunFolder: a ddpm local run folder (local.json, or only trainer-0/
// checkpoints.db) given as a trainer's --data-dir, standalone or in a cluster, is refused before
// anything is written there, in one line naming it and what to give instead, with status 2. It
// was taken for a volume without checkpoints: "volume re-bound to this run" rewrote the run's
// run.yaml, the trainer wrote RUN/checkpoints.db, and `ddpm local --resume RUN` then refused the
// run (run.yaml no longer matched local.json). One of the run's trainer-N folders still works as
// a trainer's volume.
func TestTrainerDataDirIsRunFolder(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run := makeLocalRun(t, 1, nil)
	vol := localrun.TrainerDir(run, 0)
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	// A folder that lost its local.json is still known by its first trainer's volume.
	bare := filepath.Join(t.TempDir(), "bare")
	if err := os.MkdirAll(localrun.TrainerDir(bare, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(localrun.TrainerDir(bare, 0), trainer.CheckpointFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []string{"--preset", "mnist", "--steps", "1", "--checkpoint-every", "1", "--global-batch", "4"}
	for _, tc := range []struct {
		dir  string
		args []string
	}{
		{run, []string{"--standalone"}},
		{bare, []string{"--standalone"}},
		{run, []string{"--id", "t0", "--coordinator", "127.0.0.1:7001", "--listen", "127.0.0.1:7100", "--insecure"}},
	} {
		before := tree(t, tc.dir)
		args := append(append([]string{"trainer", "--data-dir", tc.dir}, tc.args...), steps...)
		stdout, stderr, code := ddpmRunFor(t, 20*time.Second, bin, args...)
		want := "ddpm: --data-dir " + tc.dir + ": a ddpm local run folder, not a trainer's volume; give one of its trainer folders (" +
			filepath.Join(tc.dir, "trainer-N") + ", as the run's own trainers use) or a new folder\n"
		if code != 2 || stdout != "" || stderr != want {
			t.Errorf("ddpm %v: exit %d, stdout %q, stderr %q\nwant exit 2 and the one line %q", args[1:], code, stdout, stderr, want)
		}
		if after := tree(t, tc.dir); !slices.Equal(before, after) {
			t.Errorf("the refused trainer changed %s:\nbefore %q\nafter  %q", tc.dir, before, after)
		}
	}

	// The run's own trainer folder is a trainer's volume.
	args := append([]string{"trainer", "--standalone", "--data-dir", vol}, steps...)
	if stdout, stderr, code := ddpmRun(t, bin, args...); code != 0 {
		t.Fatalf("ddpm %v: exit %d\n%s%s", args[1:], code, stdout, stderr)
	}
	if _, err := os.Stat(filepath.Join(vol, trainer.CheckpointFile)); err != nil {
		t.Errorf("no checkpoint file in %s: %v", vol, err)
	}
}

// ddpmRunFor is ddpmRun killing the process after d (exit status -1 then).
func ddpmRunFor(t *testing.T, d time.Duration, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ddpm %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}
