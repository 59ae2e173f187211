package coordinator

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerGivenOneReplica: a real `ddpm trainer` process given the address of one of three
// real coordinator processes (--coordinator of the raft leader only) keeps heartbeating and
// reporting steps through the other two after that replica is killed: it learned their
// addresses from the replicas' answers. It used to be cut off, so the new leader dropped it at
// its heartbeat timeout and the run stopped.
func TestTrainerGivenOneReplica(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	addrs := freeAddrs(t, 10)
	ids := []string{"c0", "c1", "c2"}
	var peerList []string
	for i, id := range ids {
		peerList = append(peerList, fmt.Sprintf("%s=%s=%s", id, addrs[3*i], addrs[3*i+1]))
	}
	grpcAddrs := []string{addrs[1], addrs[4], addrs[7]}
	certs := tlsauthtest.Dir(t)
	sec := tlsauthtest.Load(t, certs, nil)
	runFlags := []string{"--preset", "mnist", "--steps", "100000", "--global-batch", "8", "--t", "50", "--checkpoint-every", "100000",
		"--min-trainers", "1", "--heartbeat-timeout", "3s"}
	procs := make([]*proc, 3)
	for i, id := range ids {
		procs[i] = startProc(t, bin, filepath.Join(dir, id+".log"), append([]string{"coordinator", "--certs", certs, "--id", id,
			"--raft-addr", addrs[3*i], "--grpc-addr", addrs[3*i+1], "--http-addr", addrs[3*i+2], "--peers", strings.Join(peerList, ","),
			"--data-dir", filepath.Join(dir, id), "--bootstrap"}, runFlags...)...)
	}
	client, err := Dial(grpcAddrs, sec, WithAttemptTimeout(time.Second), WithBackoff(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The leader, once the run config is in force.
	leader := -1
	for leader < 0 {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatalf("status: %v (logs in %s)", err, dir)
		}
		for i, id := range ids {
			if id == st.LeaderId && st.RunStatus != "" {
				leader = i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	startProc(t, bin, filepath.Join(dir, "t0.log"), append([]string{"trainer", "--certs", certs, "--id", "t0",
		"--coordinator", grpcAddrs[leader], "--listen", addrs[9], "--data-dir", filepath.Join(dir, "t0")}, runFlags...)...)
	steps := func(s *fsm.State) bool { return s.Members["t0"] != nil && s.Step >= 3 }
	for st := waitState(t, ctx, client, steps); !steps(st); st = waitState(t, ctx, client, steps) {
		if ctx.Err() != nil {
			t.Fatalf("the trainer made no steps (logs in %s)", dir)
		}
	}
	before, err := client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}

	if err := procs[leader].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[leader].cmd.Wait()
	// Well past the heartbeat timeout (3 s) and the new leader's grace (one more): the trainer
	// is still the member it was and its steps still arrive.
	time.Sleep(8 * time.Second)
	var survivors []string
	for i, a := range grpcAddrs {
		if i != leader {
			survivors = append(survivors, a)
		}
	}
	sc, err := Dial(survivors, sec, WithAttemptTimeout(time.Second), WithBackoff(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	after, err := sc.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := after.Members["t0"]
	if m == nil || m.Incarnation != before.Members["t0"].Incarnation || after.Generation.Number != before.Generation.Number {
		t.Fatalf("8 s after replica %s (the trainer's only --coordinator) was killed: member %+v, generation %d (was %d); the trainer was dropped (logs in %s)",
			ids[leader], m, after.Generation.Number, before.Generation.Number, dir)
	}
	later := waitState(t, ctx, sc, func(s *fsm.State) bool { return s.Step > after.Step })
	if later.Step <= after.Step {
		t.Fatalf("no step reported through the survivors after step %d (logs in %s)", after.Step, dir)
	}
}
