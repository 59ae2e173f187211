package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestTrainerS26CheckpointFileIsDirectory: a trainer whose --data-dir holds a directory named
// checkpoints.db (here with a file in it) is refused, cluster or standalone, with one line naming
// the path, exit 2, and the folder left as it was. A cluster trainer took it for a damaged file
// and moved it aside (or, without coordinators to ask, exited 1 saying it was damaged); a
// standalone one exited 1 calling it damaged.
func TestTrainerS26CheckpointFileIsDirectory(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	vol := t.TempDir()
	db := filepath.Join(vol, trainer.CheckpointFile)
	if err := os.MkdirAll(db, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(db, "inside.txt"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := treeS26(t, vol)
	want := "ddpm: " + db + " is a directory, not a checkpoint file: move it out of --data-dir " + vol +
		" (the trainer keeps its checkpoints in a file of that name)\n"
	runRefused(t, bin, 2, want, "trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t),
		"--data-dir", vol, "--insecure")
	runRefused(t, bin, 2, want, "trainer", "--standalone", "--preset", "mnist", "--data-dir", vol)
	if after := treeS26(t, vol); !slices.Equal(after, before) {
		t.Errorf("--data-dir holds\n%q\nafter the refusals; before it held\n%q", after, before)
	}
}
