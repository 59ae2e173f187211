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

// TestNewUserS24PresetWithoutData: dataset inspect, dataset prepare and eval bpd --data given
// the name of a run preset whose data does not ship with the binary say so and what to give
// instead, exit status 2, nothing written; they said "dataset not found: cifar10: no such file
// or directory (and not one of mnist, fashion-mnist)", as of a mistyped path.
func TestNewUserS24PresetWithoutData(t *testing.T) {
	dir, _ := evalFixture(t)
	const cifar = "ddpm: dataset not found: cifar10 is a run preset whose data does not ship with ddpm (only fashion-mnist and mnist do): give the path of its data (a CIFAR-10 folder or cifar-10-binary.tar.gz)"
	out := filepath.Join(t.TempDir(), "prepared")
	nuWant(t, 2, cifar, "dataset", "inspect", "cifar10")
	nuWant(t, 2, cifar, "dataset", "prepare", "cifar10:test", "--out", out)
	nuWant(t, 2, cifar, "eval", "bpd", "--checkpoint", dir, "--data", "cifar10", "--n", "1")
	nuWant(t, 2, "ddpm: dataset not found: lsun-church is a run preset whose data does not ship with ddpm (only fashion-mnist and mnist do): give the path of its data (an LSUN church_outdoor LMDB folder, the one holding data.mdb)",
		"dataset", "inspect", "lsun-church")
	mustNotExist(t, out)
}
