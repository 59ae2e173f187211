package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestOperatorS24TrainerOtherConfig: a trainer started by hand with a --config of another run
// (here another seed) than the coordinators' is refused with one line that names the cluster's
// run and what to do, exit 2; the line gave only the two config hashes.
func TestOperatorS24TrainerOtherConfig(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.Seed = 20, 10, 3
	other := run
	other.Seed = 4
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "run4.yaml")
	if err := os.WriteFile(cfgPath, other.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	certs := tlsauthtest.Dir(t)
	grpcAddr, _ := startReplica(t, run, "dev", certs)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t9", "--coordinator", grpcAddr, "--listen", freeAddr(t),
		"--data-dir", filepath.Join(dir, "t9"), "--config", cfgPath, "--certs", certs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("trainer of another config: %v (want exit 2); stderr:\n%s", err, stderr.String())
	}
	want := "ddpm: joining [" + grpcAddr + "]: run config mismatch: trainer \"t9\" runs config " + other.Hash()[:12] +
		" but the cluster runs " + run.Hash()[:12] + " (preset mnist, model tiny, dataset mnist, 20 steps, seed " +
		strconv.Itoa(int(run.Seed)) + "): leave out --config and the run flags to take the cluster's run config, or make them match it\n"
	if stderr.String() != want {
		t.Fatalf("stderr %q\nwant    %q", stderr.String(), want)
	}
}
