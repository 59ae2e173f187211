package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ddpm/internal/testutil"
)

// TestCoordinatorDataDirIsRunFolder: `ddpm coordinator --bootstrap` given a ddpm local run folder
// (local.json, trainer-0/checkpoints.db) or a trainer's folder (checkpoints.db) as --data-dir
// exits 2 with one line naming the folder, what it is and what to give instead, and writes
// nothing there; it wrote raft.db and snapshots/ into the folder without a word.
func TestCoordinatorDataDirIsRunFolder(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run := filepath.Join(t.TempDir(), "r1")
	trainer := filepath.Join(run, "trainer-0")
	if err := os.MkdirAll(trainer, 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(trainer, "checkpoints.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, text := range map[string]string{"local.json": "{}\n", "run.yaml": "preset: mnist\n"} {
		if err := os.WriteFile(filepath.Join(run, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raftAddr, grpcAddr := freeAddr(t), freeAddr(t)
	for _, tc := range []struct{ dir, want string }{
		{run, "ddpm: coordinator: --data-dir " + run + ": a ddpm local run folder, not a coordinator's data dir; " +
			"give a new folder (the run's own coordinators keep their raft data in " + filepath.Join(run, "coordinator-N") + ")\n"},
		{trainer, "ddpm: coordinator: --data-dir " + trainer + ": a trainer's folder (checkpoints.db), not a coordinator's data dir; give a new folder\n"},
	} {
		// The old binary started on such a folder and ran: the timeout ends it.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "coordinator", "--id", "c0", "--raft-addr", raftAddr, "--grpc-addr", grpcAddr,
			"--peers", "c0="+raftAddr+"="+grpcAddr, "--data-dir", tc.dir, "--bootstrap", "--insecure",
			"--preset", "mnist", "--steps", "20", "--checkpoint-every", "10")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != 2 || stderr.String() != tc.want || stdout.Len() != 0 {
			t.Errorf("ddpm coordinator --data-dir %s: exit %d, stdout %q, stderr %q\nwant exit 2, %q", tc.dir, code, stdout.String(), stderr.String(), tc.want)
		}
		for _, name := range []string{"raft.db", "snapshots"} {
			if _, err := os.Stat(filepath.Join(tc.dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s written into %s (stat: %v)", name, tc.dir, err)
			}
		}
	}
}
