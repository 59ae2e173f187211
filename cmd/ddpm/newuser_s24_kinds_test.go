package main

import (
	"os"
	"path/filepath"
	"strings"
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

// TestNewUserS24PrepareAgain: ddpm dataset prepare run a second time into the --out it made
// says that the folder holds that prepared dataset already, exit status 2, and leaves it as it
// was; it said only "output exists: D: refusing to overwrite; choose a new --out", as of any
// folder (which a folder of other files still gets).
func TestNewUserS24PrepareAgain(t *testing.T) {
	out := filepath.Join(t.TempDir(), "mnist-test")
	if _, stderr, code := nuRun(t, "dataset", "prepare", "mnist:test", "--out", out); code != 0 {
		t.Fatalf("dataset prepare: exit %d: %s", code, stderr)
	}
	index := filepath.Join(out, "index.json")
	before := fileSum(t, index)
	nuWant(t, 2, "ddpm: output exists: "+out+" holds a prepared dataset already (mnist/test, 10000 images), which runs take as it is; choose a new --out to prepare again",
		"dataset", "prepare", "mnist:test", "--out", out)
	if fileSum(t, index) != before {
		t.Errorf("%s changed", index)
	}
	other := t.TempDir()
	nuWant(t, 2, "ddpm: output exists: "+other+": refusing to overwrite; choose a new --out", "dataset", "prepare", "mnist:test", "--out", other)
}

// TestNewUserS24NotDatasetFiles: dataset inspect given a run folder's own files says what each
// is, exit status 2: its samples.png is an output of the run (the advice "give RUN" that one
// image got before was then refused as a run folder), safetensors weights are named, and a text
// file (loss.csv, run.yaml) is one. They were "not an idx3 images file, a .tar.gz, data.mdb or
// index.json".
func TestNewUserS24NotDatasetFiles(t *testing.T) {
	dir, _ := evalFixture(t)
	png := filepath.Join(dir, "samples.png")
	if _, stderr, code := nuRun(t, "dataset", "inspect", "mnist:test", "--preview", png); code != 0 {
		t.Fatalf("dataset inspect --preview: exit %d: %s", code, stderr)
	}
	weights := filepath.Join(t.TempDir(), "w.safetensors")
	if _, stderr, code := nuRun(t, "checkpoint", "export", dir, "--out", weights); code != 0 {
		t.Fatalf("checkpoint export: exit %d: %s", code, stderr)
	}
	csv := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n1,0.9875,2e-06,3.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const pre = "ddpm: unrecognized dataset format: "
	nuWant(t, 2, pre+png+": one image (an output in "+dir+", a ddpm local run folder), not a dataset; give the data itself (a preset's name, or the folder of the images)", "dataset", "inspect", png)
	nuWant(t, 2, pre+weights+": safetensors weights, not a dataset", "dataset", "inspect", weights)
	nuWant(t, 2, pre+csv+": a text file, not a dataset", "dataset", "inspect", csv)
	yaml := filepath.Join(dir, "run.yaml")
	nuWant(t, 2, pre+yaml+": a text file, not a dataset", "eval", "bpd", "--checkpoint", dir, "--data", yaml)
}

// TestNewUserS24InitText: ddpm local --init and ddpm trainer --init given a text file (a run's
// loss.csv) say it is one, exit status 2, before anything starts; they quoted the safetensors
// reader: "malformed header: header length 8317985974896653427 exceeds the limit 100000000".
func TestNewUserS24InitText(t *testing.T) {
	dir, _ := evalFixture(t)
	csv := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n1,0.9875,2e-06,3.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "run")
	nuWant(t, 2, "ddpm: --init "+csv+" is a text file, not safetensors weights", "local", "--init", csv, "--steps", "50", "--out", out, "--quiet")
	mustNotExist(t, out)
	vol := filepath.Join(t.TempDir(), "vol")
	_, stderr, code := nuRun(t, "trainer", "--standalone", "--preset", "mnist", "--init", csv, "--data-dir", vol)
	if want := "--init " + csv + " is a text file, not safetensors weights"; code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("ddpm trainer --standalone --init %s: exit %d\n%s\nwant exit 2 and %q", csv, code, stderr, want)
	}
}

// TestNewUserS24DatasetArgMissing: dataset inspect and prepare without the data say what goes
// there, exit status 2, and name a flag that took a built-in dataset's name for its value
// (dataset inspect --preview mnist: the grid's file left out). They said cobra's "accepts 1
// arg(s), received 0".
func TestNewUserS24DatasetArgMissing(t *testing.T) {
	const inspect = " (usage: ddpm dataset inspect PATH [flags])"
	const prepare = " (usage: ddpm dataset prepare SRC --out DIR [--resolution R] [flags])"
	const need = "the data is required: a preset's name (mnist, fashion-mnist) or the path of a dataset"
	nuWant(t, 2, "ddpm: dataset inspect: "+need+inspect, "dataset", "inspect")
	nuWant(t, 2, "ddpm: dataset inspect: "+need+"; --preview took mnist for its value (give --preview its own value after the data)"+inspect, "dataset", "inspect", "--preview", "mnist")
	out := filepath.Join(t.TempDir(), "p")
	nuWant(t, 2, "ddpm: dataset prepare: "+need+prepare, "dataset", "prepare", "--out", out)
	nuWant(t, 2, "ddpm: dataset inspect: one data spec, got 2: mnist fashion-mnist"+inspect, "dataset", "inspect", "mnist", "fashion-mnist")
	mustNotExist(t, out)
	mustNotExist(t, "mnist")
}
