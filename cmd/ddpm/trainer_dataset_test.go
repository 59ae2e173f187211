package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerStandaloneDataset: a standalone trainer refuses a dataset's test split in the line
// ddpm local gives (it trained on the MNIST test split without a word), writing nothing in its
// volume, and records an image folder given relative to its working directory absolute in the
// volume's run.yaml, as ddpm local does (kept as typed, a restart or ddpm sample/eval from
// another directory read other data or none). A coordinator given a test split refuses it too.
func TestTrainerStandaloneDataset(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	grey := filepath.Join(root, "gray32")
	writeImages(t, grey, 8, 32, true)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	trainerRun := func(vol, data string) (int, string, string) {
		cmd := exec.CommandContext(ctx, bin, "trainer", "--standalone", "--dataset", data, "--preset", "mnist",
			"--steps", "2", "--checkpoint-every", "1", "--global-batch", "4", "--data-dir", vol)
		cmd.Dir = root
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, stdout.String(), stderr.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), stdout.String(), stderr.String()
		}
		t.Fatal(err)
		return 0, "", ""
	}

	for _, data := range []string{"mnist:test", "gray32:test"} {
		vol := filepath.Join(root, "refused")
		code, _, stderr := trainerRun(vol, data)
		want := "ddpm: dataset " + data + " names the test split; a run trains on the train split: give " + strings.TrimSuffix(data, ":test") + "\n"
		if code != 2 || stderr != want {
			t.Errorf("trainer --standalone --dataset %s: exit %d, stderr %q\nwant exit 2, %q", data, code, stderr, want)
		}
		mustNotExist(t, vol)
	}

	vol := filepath.Join(root, "D")
	if code, stdout, stderr := trainerRun(vol, "gray32"); code != 0 {
		t.Fatalf("trainer --standalone --dataset gray32: exit %d\n%s%s", code, stdout, stderr)
	}
	run, err := config.Load(filepath.Join(vol, trainer.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if run.Dataset != grey {
		t.Errorf("run.yaml of --dataset gray32 in %s: dataset %q, want %q", root, run.Dataset, grey)
	}
	// The restart with the same relative flag is the same run: it finds the run finished.
	if code, stdout, stderr := trainerRun(vol, "gray32"); code != 0 {
		t.Errorf("restart of trainer --standalone --dataset gray32: exit %d\n%s%s", code, stdout, stderr)
	}

	// A coordinator given a test split refuses it before it starts.
	cdir := filepath.Join(root, "c0")
	args := []string{"coordinator", "--id", "c0", "--raft-addr", freeAddr(t), "--grpc-addr", freeAddr(t), "--data-dir", cdir,
		"--dataset", "mnist:test", "--preset", "mnist"}
	args = append(args, "--peers", "c0="+args[4]+"="+args[6])
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	want := "ddpm: dataset mnist:test names the test split; a run trains on the train split: give mnist\n"
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
		t.Errorf("ddpm %s: %v, stderr %q\nwant exit 2, %q", strings.Join(args, " "), err, stderr.String(), want)
	}
	mustNotExist(t, cdir)
}
