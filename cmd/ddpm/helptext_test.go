package main

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"ddpm/config"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestStepFlagHelp: a --step flag's help says what no --step means once, without pflag's
// "(default -1)" beside it; eval bpd's usage shows --data as optional (it defaults to the
// run's dataset); ddpm loss explains its Q0..Q3 columns.
func TestStepFlagHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", "verify", "--help"}, "--step int   verify only this step (default: all)\n"},
		{[]string{"checkpoint", "export", "--help"}, "--step int     checkpoint step (default: the newest that verifies)\n"},
		{[]string{"checkpoint", "fetch", "--help"}, "--step int     committed step to copy (required)\n"},
		{[]string{"sample", "--help"}, "checkpoint step (default: the newest that verifies)\n"},
		{[]string{"eval", "bpd", "--help"}, "checkpoint step (default: the newest that verifies)\n"},
		{[]string{"eval", "bpd", "--help"}, "ddpm eval bpd --checkpoint PATH [--data PATH] [--n 1000]"},
		{[]string{"loss", "--help"}, "The table's Q0..Q3 columns are the loss by timestep quartile"},
	} {
		out, err := runCLI(t, context.Background(), nil, tc.args...)
		if err != nil || !strings.Contains(out, tc.want) || strings.Contains(out, "(default -1)") {
			t.Errorf("ddpm %s: %v, want %q without \"(default -1)\" in:\n%s", strings.Join(tc.args, " "), err, tc.want, out)
		}
	}
	// The flag still parses as a step; a negative one is refused by the parser.
	_, err := runCLI(t, context.Background(), nil, "checkpoint", "verify", "x.db", "--step", "-3")
	if err == nil || !strings.Contains(err.Error(), `invalid argument "-3" for "--step" flag: want a step of 0 or more`) {
		t.Errorf("--step -3: %v", err)
	}
}

// TestCheckpointListDamaged: a checkpoint whose header cannot be read is a DAMAGED row, and
// list then exits 1 saying how many are damaged.
func TestCheckpointListDamaged(t *testing.T) {
	_, file := evalFixture(t)
	args := []string{"checkpoint", "list", file}
	out, err := runCLI(t, context.Background(), nil, args...)
	if err != nil || strings.Contains(out, "DAMAGED") {
		t.Fatalf("intact file: %v\n%s", err, out)
	}
	db, err := bolt.Open(file, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("checkpoints")).Bucket(binary.BigEndian.AppendUint64(nil, 0)).Delete([]byte("header"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	out, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 1, file+": 1 of 1 checkpoints are damaged (the DAMAGED rows)")
	if !strings.Contains(out, "DAMAGED: ") {
		t.Errorf("no DAMAGED row:\n%s", out)
	}
}

// TestLossBeforeFirstReport: with no loss reported yet the table says so under its header.
func TestLossBeforeFirstReport(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	certs := tlsauthtest.Dir(t)
	addr, _ := startReplica(t, run, "test", certs)
	out, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", certs)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "STEP") || lines[1] != "no loss reported yet" {
		t.Errorf("loss before any report:\n%s", out)
	}
}
