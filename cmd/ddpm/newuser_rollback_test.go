package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"ddpm/internal/localrun"
)

// TestNewUserRollbackRunFolder: `ddpm checkpoint rollback RUN --to-step N`, a ddpm local run
// folder given as checkpoint list/verify/export take one, answers with the command that works
// (the run's coordinators from local.json, its certificates) and how to have them up, exit 2;
// it was 'unknown command "RUN" for "ddpm checkpoint rollback"'. Any other argument still gets
// that line.
func TestNewUserRollbackRunFolder(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	mnistRunFolder(t, run)
	m, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	m.CoordinatorPorts[0].GRPC = 40123
	if err := localrun.WriteManifest(run, m); err != nil {
		t.Fatal(err)
	}
	args := []string{"checkpoint", "rollback", run, "--to-step", "10"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint rollback asks a running cluster's coordinators, not a folder: for the ddpm local run %s, start it (ddpm local --resume %s), then: ddpm checkpoint rollback --coordinator 127.0.0.1:40123 --certs %s --to-step N",
		run, run, filepath.Join(run, "certs")))

	other := filepath.Join(root, "other")
	args = []string{"checkpoint", "rollback", other, "--to-step", "10"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, `checkpoint rollback: unknown command "`+other+`" for "ddpm checkpoint rollback" (usage: ddpm checkpoint rollback --coordinator ADDR --to-step N [--yes] (--certs DIR | --insecure) [flags])`)
}
