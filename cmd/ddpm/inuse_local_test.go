package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/localrun"
)

// TestCheckpointInUseLocalRunHint: sample, eval and the checkpoint commands on a ddpm local run
// folder whose trainer holds its checkpoints.db (the run is going) print the fetch command to
// run: the trainer's address and the run's certificates from local.json, a copy beside the
// run's run.yaml (which sample reads it with) and where the committed steps are listed. The
// hint was "ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db", without the --certs
// fetch requires, and a COPY.db that sample then refused for want of a run.yaml.
func TestCheckpointInUseLocalRunHint(t *testing.T) {
	dir, file := evalFixture(t)
	m := localrun.Manifest{ConfigHash: fixtureRun.Hash(), Coordinators: 2, Trainers: 1,
		CoordinatorPorts: []localrun.CoordinatorPorts{{Raft: 40001, GRPC: 40002, HTTP: 40003}, {Raft: 40011, GRPC: 40012, HTTP: 40013}},
		TrainerPorts:     []localrun.TrainerPorts{{Listen: 40021, HTTP: 40022}}}
	if err := localrun.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	certs := filepath.Join(dir, "certs")
	want := fmt.Sprintf("checkpoint: %s in use by process %d (trainer-0 of the ddpm local run %s: copy a committed checkpoint out of it with: "+
		"ddpm checkpoint fetch 127.0.0.1:40021 --certs %s --step N --out %s, N a committed step that ddpm status %s lists)",
		file, os.Getpid(), dir, certs, filepath.Join(dir, "step-N.db"), dir)
	out := filepath.Join(t.TempDir(), "x")
	for _, args := range [][]string{
		{"sample", "--checkpoint", dir, "--n", "1", "--out", out + ".png"},
		{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"},
		{"checkpoint", "list", dir},
		{"checkpoint", "export", file, "--out", out + ".safetensors"},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, want)
	}
	mustNotExist(t, out+".png")
}
