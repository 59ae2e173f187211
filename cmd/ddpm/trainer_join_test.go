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
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerDuplicateIDRefused: a second trainer process started by hand with the --id of a
// live member (another --listen address) is refused with one line naming the member's address,
// exit 2, and the member keeps its rank; it used to take the id over, so both processes held
// rank 0 of one ring and the run stalled for good while both heartbeated.
func TestTrainerDuplicateIDRefused(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	// t1 heartbeats every 200 ms, and the duplicate retries its join for twice the timeout
	// before it gives up: 3 s (not 1 s) keeps t1 live through a loaded machine's stalls in that
	// window (at 1 s, one second without a heartbeat applied dropped it: the duplicate joined).
	run.Steps, run.CheckpointEvery, run.HeartbeatTimeout = 20, 10, config.Duration(3*time.Second)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfgPath, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	certs := tlsauthtest.Dir(t)
	grpcAddr, cli := startReplica(t, run, "dev", certs)

	// The live member t1, heartbeating from 127.0.0.1:7000.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "t1", Address: "127.0.0.1:7000", Version: "dev", ConfigHash: run.Hash()})
	hbCtx, hbStop := context.WithCancel(ctx)
	defer hbStop()
	go func() {
		for hbCtx.Err() == nil {
			_, _ = cli.Heartbeat(hbCtx, "t1")
			time.Sleep(200 * time.Millisecond)
		}
	}()
	before, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t1", "--coordinator", grpcAddr, "--listen", freeAddr(t),
		"--data-dir", filepath.Join(dir, "t1b"), "--config", cfgPath, "--certs", certs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("duplicate trainer: %v (want exit 2); stderr:\n%s", err, stderr.String())
	}
	want := regexp.MustCompile(`^ddpm: joining \[` + regexp.QuoteMeta(grpcAddr) + `\]: trainer id in use: "t1" belongs to a live member at 127\.0\.0\.1:7000 \(last heartbeat [0-9.]+m?s ago\); give each trainer its own --id\n$`)
	if !want.MatchString(stderr.String()) {
		t.Fatalf("stderr %q, want one line matching %s", stderr.String(), want)
	}

	after, err := cli.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := after.Members["t1"]
	if m == nil || m.Address != "127.0.0.1:7000" || m.State != fsm.MemberActive || after.Generation.Number != before.Generation.Number {
		t.Fatalf("after the refused duplicate: member %+v, generation %d (was %d)", m, after.Generation.Number, before.Generation.Number)
	}
}

// TestTrainerListenChecked: --listen is also the address the ring peers dial, so a bare port, a
// wildcard IP or port 0 (any free port; it said 'port "0" is not a number in 1..65535') is
// refused at once with one line (exit 2), as is a --coordinator entry that is not host:port. ":7100" used to fail only after the dataset loaded and the cluster answered,
// as "bad command: address ...", and "0.0.0.0:7100" was advertised to peers on other machines,
// which dial themselves there.
func TestTrainerListenChecked(t *testing.T) {
	vol := filepath.Join(t.TempDir(), "vol")
	for _, tc := range []struct {
		listen, coord, want string
	}{
		{":7100", "127.0.0.1:7001", "--listen :7100: the ring peers dial this address: give a host they can reach (this machine's IP or name), not only a port"},
		{"0.0.0.0:7100", "127.0.0.1:7001", "--listen 0.0.0.0:7100: the ring peers dial this address: give an address of this machine they can reach, not 0.0.0.0"},
		{"[::]:7100", "127.0.0.1:7001", "--listen [::]:7100: the ring peers dial this address: give an address of this machine they can reach, not ::"},
		{"10.0.0.5:0", "127.0.0.1:7001", "--listen 10.0.0.5:0: give a fixed port in 1..65535 (the ring peers and the coordinators reach the trainer there)"},
		{"10.0.0.5:70000", "127.0.0.1:7001", `--listen 10.0.0.5:70000: port "70000" is not a number in 1..65535`},
		{"10.0.0.5:7100", "127.0.0.1:7001,c2", "--coordinator c2: not a host:port address (missing port in address)"},
	} {
		args := []string{"trainer", "--id", "t0", "--listen", tc.listen, "--coordinator", tc.coord, "--data-dir", vol, "--preset", "mnist", "--insecure"}
		t0 := time.Now()
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("%v took %v, want at once", args, d)
		}
	}
	mustNotExist(t, vol)
}
