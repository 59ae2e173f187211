package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNewUserS24TextNotCheckpoint: a text file given where a checkpoint file is expected (the
// run folder's loss.csv, a process log) is one line saying it is text, exit status 2, for
// checkpoint list and verify, sample and eval bpd. They said "checkpoint: F is not a readable
// checkpoint file (file size too small 5408): corrupt checkpoint" or "(invalid database)", and
// checkpoint list and verify exited 1, the status their help gives a damaged checkpoint.
func TestNewUserS24TextNotCheckpoint(t *testing.T) {
	dir, _ := evalFixture(t)
	csv := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n1,0.9875,2e-06,3.25\n2,0.9712,4e-06,3.19\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "trainer-0.log")
	if err := os.WriteFile(log, []byte("time=2026-11-30T23:24:25Z level=INFO msg=joining — über\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "s.png")
	for _, f := range []string{csv, log} {
		nuWant(t, 2, "ddpm: "+f+" is a text file, not a checkpoint file (checkpoints.db)", "checkpoint", "list", f)
		nuWant(t, 2, "ddpm: "+f+" is a text file, not a checkpoint file (checkpoints.db)", "checkpoint", "verify", f)
		nuWant(t, 2, "ddpm: --checkpoint "+f+" is a text file, not a checkpoint file (checkpoints.db)", "sample", "--checkpoint", f, "--n", "1", "--out", out)
		nuWant(t, 2, "ddpm: --checkpoint "+f+" is a text file, not a checkpoint file (checkpoints.db)", "eval", "bpd", "--checkpoint", f, "--n", "1")
	}
	mustNotExist(t, out)
}
