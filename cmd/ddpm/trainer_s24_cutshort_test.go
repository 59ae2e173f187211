package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestShardCutShortLeavesRunGoing: t1's copy of the run's prepared data is truncated while t1
// trains in a ring with t0 (min_trainers 1). t1's next read past the shard's new end leaves the
// run on it: exit 2, one line naming the record and what to do, the leave in its log; t0 goes on
// alone in a new generation and commits. Restarted onto the same copy, t1 is refused at start-up
// by the dataset's own size check (exit 2, one line), without joining. Before, the read died of
// the memory fault (SIGBUS), a runtime trace on stderr, no leave: t0's ring waited for t1's
// heartbeat timeout.
func TestShardCutShortLeavesRunGoing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	n0, n1 := filepath.Join(dir, "n0"), filepath.Join(dir, "n1")
	nodeData(t, n0, n1)
	run, cfg := procRun(t, dir, endlessSteps, 1, 2, 2*time.Second, func(r *config.Run) { r.Dataset = "prep" })
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainerIn(t, n0, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs)
	vol, listen := filepath.Join(dir, "t1-vol"), freeAddr(t)
	t1 := launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	backInRing(t, cli, "t1")

	if err := os.Truncate(filepath.Join(n1, "prep", "shard-00000.bin"), 4096); err != nil {
		t.Fatal(err)
	}
	select {
	case <-t1.exited:
	case <-time.After(2 * time.Minute):
		b, _ := os.ReadFile(t1.log)
		t.Fatalf("t1 did not exit within 2 minutes of its shard's truncation; its log:\n%s\nstderr:\n%s", b, t1.stderr.String())
	}
	want := regexp.MustCompile(`^ddpm: trainer: the dataset cannot be read: record [0-9]+ of prep: a memory fault reading the file that holds it \(SIGBUS\): ` +
		`the file was cut short under the running trainer; the data changed on this trainer's disk after it started: put the run's data back and start the trainer again\n$`)
	var ee *exec.ExitError
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 2 || !want.MatchString(t1.stderr.String()) {
		t.Fatalf("t1 exited with %v and stderr\n%q\nwant status 2 and one line matching %q", t1.err, t1.stderr.String(), want)
	}
	if b, _ := os.ReadFile(t1.log); !strings.Contains(string(b), `"msg":"`+MsgLeftOnFailure+`"`) {
		t.Fatalf("t1 did not leave the cluster; its log:\n%s", b)
	}
	alone := waitFor(t, cli, "a generation of t0 alone", time.Minute, func(s *fsm.State) bool {
		return s.Members["t1"] == nil && s.Generation.World == 1
	})
	alone = commitIn(t, cli, "a commit by t0 alone", alone.Generation.Number)

	t1 = launchTrainerIn(t, n1, bin, vol, "t1", listen, coord, cfg, certs)
	select {
	case <-t1.exited:
	case <-time.After(time.Minute):
		t.Fatalf("the restarted t1 did not exit within a minute (log %s)", t1.log)
	}
	refused := regexp.MustCompile(`^ddpm: dataset "prep": integrity check failed: ` + regexp.QuoteMeta(filepath.Join("prep", "shard-00000.bin")) + `: 4096 bytes, want [0-9]+ .*\(truncated copy\?\)\n$`)
	if !errors.As(t1.err, &ee) || ee.ExitCode() != 2 || !refused.MatchString(t1.stderr.String()) {
		t.Fatalf("the restarted t1 exited with %v and stderr %q; want status 2 and one line matching %q", t1.err, t1.stderr.String(), refused)
	}
	st := waitFor(t, cli, "the state after the restarted t1 exited", 10*time.Second, func(*fsm.State) bool { return true })
	if st.Generation.Number != alone.Generation.Number || st.Members["t1"] != nil {
		t.Fatalf("after the restarted t1: generation %d, t1 a member: %v; want t0's generation %d without t1", st.Generation.Number, st.Members["t1"] != nil, alone.Generation.Number)
	}
	stopTrainer(t, "t0", t0)
}
