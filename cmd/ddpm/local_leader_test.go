package main

import (
	"bytes"
	"context"
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

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth"
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
	// A follower meets the dead leader's refused port only with a write that reaches it after
	// the kill and before it learns of the next leader (0.5-1 s of heartbeat timeout, and ddpm
	// local restarts the killed replica at once); the trainer's own calls go to the leader. So
	// the test forwards its own writes through the followers in that window (probeFollowers),
	// and kills the newest leader again, up to three times, should none land in it.
	sec, err := tlsauth.Load(tlsauth.Config{Dir: filepath.Join(run, "certs")})
	if err != nil {
		t.Fatal(err)
	}
	var killed []string
	for attempt := range 3 {
		leader := newestLeader(t, run, live)
		if err := syscall.Kill(childPid(t, run, "coordinator-"+strconv.Itoa(leader), 0), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed = append(killed, `leader_grpc="`+localrun.Addr(man3.CoordinatorPorts[leader].GRPC)+`"`)
		var followers []string
		for i, p := range man3.CoordinatorPorts {
			if i != leader {
				followers = append(followers, localrun.Addr(p.GRPC))
			}
		}
		probeFollowers(t, sec, followers, 3*time.Second)
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

// probeFollowers sends, every 20 ms for d, a heartbeat of a trainer id that no run has to each
// of the coordinators at addrs: a follower forwards it to the leader it knows, which refuses it
// (unknown member) and changes nothing; a follower that cannot reach that leader logs
// coordinator.MsgCannotForward.
func probeFollowers(t *testing.T, sec *tlsauth.Bundle, addrs []string, d time.Duration) {
	t.Helper()
	var clients []api.CoordinatorClient
	for _, a := range addrs {
		cc, err := grpc.NewClient(a, sec.DialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		clients = append(clients, api.NewCoordinatorClient(cc))
	}
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, c := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			c.Heartbeat(ctx, &api.HeartbeatRequest{Id: "probe-not-a-trainer"})
			cancel()
		}
	}
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
