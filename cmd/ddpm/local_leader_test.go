package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Whether a follower meets the dead leader's refused port depends on timing: a call must
	// reach it after the kill and before it learns of the next leader, and ddpm local restarts
	// the killed replica at once. So the newest leader is killed again, up to three times.
	var killed []string
	for attempt := range 3 {
		leader := newestLeader(t, run, live)
		if err := syscall.Kill(childPid(t, run, "coordinator-"+strconv.Itoa(leader), 0), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed = append(killed, `leader_grpc="`+localrun.Addr(man3.CoordinatorPorts[leader].GRPC)+`"`)
		for deadline := time.Now().Add(12 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			out := live.String()
			if i := strings.Index(out, "cannot forward to the leader"); i >= 0 {
				line, _, _ := strings.Cut(out[i:], "\n")
				if strings.Contains(line, "--peers") || !strings.Contains(line, "it is down") || !slices.ContainsFunc(killed, func(k string) bool { return strings.Contains(line, k) }) {
					t.Fatalf("the hint blames a flag ddpm local passes, or does not name a killed leader (%v) as down:\n%s", killed, line)
				}
				return
			}
		}
		t.Logf("attempt %d: no follower met the killed leader (%s) yet", attempt+1, killed[attempt])
	}
	t.Fatalf("no follower said it could not forward to a killed leader (%v):\n%s", killed, live)
}

// newestLeader is the index of the coordinator of ddpm local's run that became leader last,
// by the highest term in its log's "became leader" lines.
func newestLeader(t *testing.T, run string, live fmt.Stringer) int {
	t.Helper()
	leader, best := -1, int64(-1)
	for i := range 3 {
		b, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "coordinator-"+strconv.Itoa(i)+".log"))
		for _, line := range bytes.Split(b, []byte("\n")) {
			if !bytes.Contains(line, []byte(`"msg":"`+coordinator.MsgBecameLeader+`"`)) {
				continue
			}
			var rec struct {
				Term int64 `json:"term"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Term > best {
				leader, best = i, rec.Term
			}
		}
	}
	if leader < 0 {
		t.Fatalf("no coordinator became leader:\n%s", live)
	}
	return leader
}
