package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
)

// TestCheckpointInUseExit2: a checkpoint file a trainer holds open (here: this process, holding
// a real bbolt store read-write) is a command line that cannot be run now, not a damaged file:
// every command that reads it (checkpoint list/verify/export/compact/fetch --out, sample, eval bpd) exits 2
// with the same line, naming the holder and how to copy a committed checkpoint out of it.
// The checkpoint commands used to exit 1 (a damaged checkpoint), sample and eval without the hint.
func TestCheckpointInUseExit2(t *testing.T) {
	dir, file := evalFixture(t)
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := fmt.Sprintf("checkpoint: %s in use by process %d (a running trainer? copy a committed checkpoint with: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db)", file, os.Getpid())
	out := filepath.Join(t.TempDir(), "x")
	for _, args := range [][]string{
		{"checkpoint", "list", file},
		{"checkpoint", "verify", file},
		{"checkpoint", "export", file, "--out", out + ".safetensors"},
		{"checkpoint", "compact", file},
		{"sample", "--checkpoint", dir, "--n", "1", "--out", out + ".png"},
		{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, want)
	}
	mustNotExist(t, out+".safetensors")
	mustNotExist(t, out+".png")

	// fetch --out into a file a trainer holds: the same line (it used to exit 1).
	addr, _ := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 1))
	held := filepath.Join(t.TempDir(), "held.db")
	hst, err := checkpoint.Open(held, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer hst.Close()
	args := []string{"checkpoint", "fetch", addr, "--step", "50", "--out", held, "--insecure"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint: %s in use by process %d (a running trainer? copy a committed checkpoint with: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db)", held, os.Getpid()))
}
