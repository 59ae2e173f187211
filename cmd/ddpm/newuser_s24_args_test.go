package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNewUserS24CheckpointAsArgument: sample and eval bpd given the run folder as an argument,
// as checkpoint list, export, status and loss take it, say to give it as --checkpoint, exit
// status 2, nothing written; an argument beside --checkpoint is named as one they do not take.
// Both were cobra's 'unknown command "RUN" for "ddpm sample"', which called the folder a
// command.
func TestNewUserS24CheckpointAsArgument(t *testing.T) {
	dir, _ := evalFixture(t)
	out := filepath.Join(t.TempDir(), "g.png")
	const sampleUse = "(usage: ddpm sample --checkpoint PATH [--step N] [--n 64] [--seed S] --out grid.png [flags])"
	const evalUse = "(usage: ddpm eval bpd --checkpoint PATH [--data PATH] [--n 1000] [flags])"
	nuWant(t, 2, "ddpm: sample: "+dir+": give the checkpoint as --checkpoint "+dir+" "+sampleUse, "sample", dir, "--n", "1", "--out", out)
	nuWant(t, 2, "ddpm: eval bpd: "+dir+": give the checkpoint as --checkpoint "+dir+" "+evalUse, "eval", "bpd", dir, "--n", "1")
	nuWant(t, 2, "ddpm: sample: unexpected argument extra: the command takes flags only "+sampleUse, "sample", "--checkpoint", dir, "extra", "--out", out)
	nuWant(t, 2, "ddpm: eval bpd: unexpected arguments a b: the command takes flags only "+evalUse, "eval", "bpd", "a", "b")
	// Only a folder or a checkpoint file is advised as --checkpoint (review N1): a PNG name is
	// sample's --out, a number or a text file no checkpoint.
	db := filepath.Join(dir, "trainer-0", "checkpoints.db")
	nuWant(t, 2, "ddpm: eval bpd: "+db+": give the checkpoint as --checkpoint "+db+" "+evalUse, "eval", "bpd", db)
	nuWant(t, 2, "ddpm: sample: "+out+": give the output as --out "+out+" "+sampleUse, "sample", out, "--checkpoint", dir)
	nuWant(t, 2, "ddpm: eval bpd: unexpected argument "+out+": the command takes flags only "+evalUse, "eval", "bpd", out, "--checkpoint", dir)
	nuWant(t, 2, "ddpm: sample: unexpected argument 16: the command takes flags only "+sampleUse, "sample", "16")
	csv := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 2, "ddpm: sample: unexpected argument "+csv+": the command takes flags only "+sampleUse, "sample", csv)
	// A flag's value left out, the next flag taken for it and that flag's value left over as an
	// argument: the flag is named, not the argument (it was "unexpected argument 3").
	nuWant(t, 2, "ddpm: eval bpd: --checkpoint --n: --checkpoint needs a value (--n is a flag of ddpm eval bpd)", "eval", "bpd", "--checkpoint", "--n", "3")
	nuWant(t, 2, "ddpm: sample: --checkpoint --out: --checkpoint needs a value (--out is a flag of ddpm sample)", "sample", "--checkpoint", "--out", out)
	mustNotExist(t, out)
}

// TestNewUserS24ModelInfoPath: ddpm model info given a run folder, a checkpoint file or
// safetensors weights (where a U-Net preset's name goes) names the preset they are of and the
// command for it, exit status 2; any other path is named as a path. All said 'unet: invalid
// config: unknown preset "PATH" (known: ...)'.
func TestNewUserS24ModelInfoPath(t *testing.T) {
	dir, file := evalFixture(t)
	yaml := filepath.Join(dir, "run.yaml")
	weights := filepath.Join(t.TempDir(), "w.safetensors")
	if _, stderr, code := nuRun(t, "checkpoint", "export", dir, "--out", weights); code != 0 {
		t.Fatalf("checkpoint export: exit %d: %s", code, stderr)
	}
	for _, p := range []string{dir, file} {
		nuWant(t, 2, "ddpm: model info "+p+": "+p+" is a path, not a U-Net preset; its checkpoints are of U-Net tiny ("+yaml+"): ddpm model info tiny", "model", "info", p)
	}
	nuWant(t, 2, "ddpm: --preset: "+dir+" is a path, not a U-Net preset; its checkpoints are of U-Net tiny ("+yaml+"): ddpm model info tiny", "model", "info", "--preset", dir)
	nuWant(t, 2, "ddpm: model info "+weights+": "+weights+" is a path, not a U-Net preset; its weights are those of U-Net tiny: ddpm model info tiny", "model", "info", weights)
	nuWant(t, 2, "ddpm: model info "+yaml+": "+yaml+" is a path, not a U-Net preset; it is a run config of U-Net tiny: ddpm model info tiny", "model", "info", yaml)
	csv := filepath.Join(dir, "loss.csv")
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 2, "ddpm: model info "+csv+": "+csv+" is a path, not a U-Net preset (known: celebahq256, cifar10, lsun256, small, tiny)", "model", "info", csv)
	// A checkpoint file without its run.yaml (a fetched copy): the model its checkpoints name.
	lone := filepath.Join(t.TempDir(), "final.db")
	if err := os.Rename(file, lone); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 2, "ddpm: model info "+lone+": "+lone+" is a path, not a U-Net preset; its checkpoints are of U-Net tiny: ddpm model info tiny", "model", "info", lone)
}

// TestNewUserS24CheckpointFileMissing: checkpoint list, verify, export and compact without their
// FILE say what it may be, exit status 2; with two, how many. They said cobra's "accepts 1
// arg(s), received 0".
func TestNewUserS24CheckpointFileMissing(t *testing.T) {
	const need = "FILE is required: a checkpoint file (checkpoints.db), a trainer's folder or a ddpm local run folder"
	nuWant(t, 2, "ddpm: checkpoint list: "+need+" (usage: ddpm checkpoint list FILE [flags])", "checkpoint", "list")
	nuWant(t, 2, "ddpm: checkpoint verify: "+need+" (usage: ddpm checkpoint verify FILE [--step N] [flags])", "checkpoint", "verify")
	nuWant(t, 2, "ddpm: checkpoint compact: "+need+" (usage: ddpm checkpoint compact FILE [flags])", "checkpoint", "compact")
	nuWant(t, 2, "ddpm: checkpoint export: one FILE, got 2: a b (usage: ddpm checkpoint export FILE [--step N] [--ema] --out model.safetensors [flags])", "checkpoint", "export", "a", "b", "--out", "w.safetensors")
}
