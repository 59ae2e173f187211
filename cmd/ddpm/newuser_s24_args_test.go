package main

import (
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
	mustNotExist(t, out)
}
