package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/testutil"
)

// TestTrainerOtherCAGivesUp: a trainer process given --config and the --certs of another
// cluster (two `ddpm certs init` CAs) hears only certificate refusals from the coordinator; after
// --cert-refusal-wait (2s here; 30s by default) of them it exits with status 2 and one line
// naming the cause and --certs, leaving no --data-dir (the run was never accepted: the folder
// and the empty checkpoint file it made are removed again). It used to log "coordinator not
// answering; retrying" every 30 s forever.
func TestTrainerOtherCAGivesUp(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery = 20, 10
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfgPath, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ours, theirs := filepath.Join(dir, "ours"), filepath.Join(dir, "theirs")
	for _, d := range []string{ours, theirs} {
		if out, err := exec.CommandContext(ctx, bin, "certs", "init", d).CombinedOutput(); err != nil {
			t.Fatalf("ddpm certs init %s: %v\n%s", d, err, out)
		}
	}
	grpcAddr, _ := startReplica(t, run, "dev", theirs)

	vol := filepath.Join(dir, "vol")
	cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t0", "--coordinator", grpcAddr, "--listen", freeAddr(t),
		"--data-dir", vol, "--config", cfgPath, "--certs", ours, "--cert-refusal-wait", "2s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err = cmd.Run()
	took := time.Since(t0)
	t.Logf("trainer exited after %v", took)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("trainer with another CA's certs: %v after %v (want exit 2); stderr:\n%s", err, took, stderr.String())
	}
	if took < 2*time.Second || took > 20*time.Second {
		t.Errorf("gave up after %v, want 2 s of refusals (--cert-refusal-wait 2s)", took)
	}
	want := regexp.MustCompile(`^ddpm: joining \[` + regexp.QuoteMeta(grpcAddr) + `\]: only certificate refusals for 2s: the coordinator's certificate is not from this process's CA \(--certs of another run\?\); ` +
		`give --certs the directory of this cluster's CA \(the one its coordinators were started with\): .*x509: certificate signed by unknown authority.*\n$`)
	if !want.MatchString(stderr.String()) {
		t.Fatalf("stderr %q, want one line matching %s", stderr.String(), want)
	}
	mustNotExist(t, vol)
}

// TestTrainerCertRefusalWaitFlag: --cert-refusal-wait must be a positive duration; 0 or a
// negative one is refused before anything is opened or written, with one line and exit 2.
func TestTrainerCertRefusalWaitFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	for _, v := range []string{"0s", "-2s"} {
		args := []string{"trainer", "--coordinator", "127.0.0.1:1", "--listen", "127.0.0.1:2", "--data-dir", dir, "--preset", "mnist", "--cert-refusal-wait", v}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "--cert-refusal-wait "+v+": want a positive duration (default 30s)")
		mustNotExist(t, dir)
	}
}
