package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/localrun"
)

// TestLocalLeaderKilledHintNamesNoFlag: after the leader of ddpm local's three coordinators is
// killed, a follower that cannot forward to it says so naming the leader's address and that
// it is down, without telling the user, who typed no --peers, to check --peers.
func TestLocalLeaderKilledHintNamesNoFlag(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 50 })
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	man3, err := localrun.NewManifest(man.ConfigHash, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	man3.Samples = man.Samples
	if err := localrun.WriteManifest(run, man3); err != nil {
		t.Fatal(err)
	}
	cmd, _ := localCommand(t, "--resume", run)
	live := &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() }()
	waitStepped(t, run, "trainer-0", live)
	leader := -1
	for i := range 3 {
		b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "coordinator-"+strconv.Itoa(i)+".log"))
		if bytes.Contains(b, []byte(`"msg":"`+coordinator.MsgBecameLeader+`"`)) {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("no coordinator became leader:\n%s", live)
	}
	if err := syscall.Kill(childPid(t, run, "coordinator-"+strconv.Itoa(leader), 0), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	addr := localrun.Addr(man3.CoordinatorPorts[leader].GRPC)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out := live.String()
		if i := strings.Index(out, "cannot forward to the leader"); i >= 0 {
			line, _, _ := strings.Cut(out[i:], "\n")
			if strings.Contains(line, "--peers") || !strings.Contains(line, "it is down") || !strings.Contains(line, `leader_grpc="`+addr+`"`) {
				t.Fatalf("the hint blames a flag ddpm local passes, or does not name the leader %s as down:\n%s", addr, line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no follower said it could not forward to the killed leader %s:\n%s", addr, out)
		}
	}
}
