package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// ddpmBinary is the real binary, built once per test process.
func ddpmBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the ddpm binary and starts processes; skipped with -short")
	}
	return testutil.DDPMBinary(t)
}

// freeAddrs returns n distinct loopback addresses with free ports.
func freeAddrs(t *testing.T, n int) []string {
	var ls []net.Listener
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}

type proc struct {
	cmd  *exec.Cmd
	args []string
	log  string
}

func startProc(t *testing.T, bin, log string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &proc{cmd: cmd, args: args, log: log}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

func httpStatus(addr string) (StatusJSON, error) {
	var doc StatusJSON
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + addr + "/api/status")
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&doc)
	return doc, err
}

// TestProcessesKillLeader starts three real `ddpm coordinator` processes on loopback, has a
// client join, heartbeat, report progress and commit a checkpoint, then kill -9s the leader:
// a new leader must serve within 3s, nothing committed may be lost, and the client's
// heartbeats and reports keep working through the change. The killed replica then restarts
// from its bbolt data and catches up to the same state.
func TestProcessesKillLeader(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	addrs := freeAddrs(t, 9)
	ids := []string{"c0", "c1", "c2"}
	var peerList []string
	for i, id := range ids {
		peerList = append(peerList, fmt.Sprintf("%s=%s=%s", id, addrs[3*i], addrs[3*i+1]))
	}
	certs := tlsauthtest.Dir(t) // raft and gRPC over mutual TLS, as in production
	sec := tlsauthtest.Load(t, certs, nil)
	procArgs := func(i int) []string {
		return []string{"coordinator", "--certs", certs, "--id", ids[i], "--raft-addr", addrs[3*i], "--grpc-addr", addrs[3*i+1],
			"--http-addr", addrs[3*i+2], "--peers", strings.Join(peerList, ","), "--data-dir", filepath.Join(dir, ids[i]),
			"--bootstrap", "--preset", "mnist", "--steps", "1000", "--min-trainers", "1", "--heartbeat-timeout", "5s"}
	}
	procs := make([]*proc, 3)
	for i := range ids {
		procs[i] = startProc(t, bin, filepath.Join(dir, ids[i]+".log"), procArgs(i)...)
	}
	grpcAddrs := []string{addrs[1], addrs[4], addrs[7]}
	client, err := Dial(grpcAddrs, sec, WithAttemptTimeout(time.Second), WithBackoff(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	joined, err := client.Join(ctx, JoinRequest{ID: "t1", Address: "127.0.0.1:9999", Version: "dev"})
	if err != nil {
		t.Fatalf("join: %v (logs in %s)", err, dir)
	}
	if joined.Run.Preset != "mnist" || joined.Run.Steps != 1000 {
		t.Fatalf("joined run %+v", joined.Run)
	}
	// Assignments stream from whichever replica the client holds.
	assignments := make(chan *api.Assignment, 16)
	go client.WatchAssignment(ctx, "t1", func(a *api.Assignment) error { assignments <- a; return nil })
	select {
	case a := <-assignments:
		if a.Rank != 0 || a.World != 1 || a.Generation != 1 || a.Ring[0].Address != "127.0.0.1:9999" {
			t.Fatalf("assignment %v", a)
		}
	case <-ctx.Done():
		t.Fatal("no assignment")
	}

	// Heartbeats every 200ms in the background; every one must succeed (the client retries).
	var hbOK, hbFail atomic.Int64
	var hbErr atomic.Value
	hbCtx, hbCancel := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		for hbCtx.Err() == nil {
			cctx, ccancel := context.WithTimeout(hbCtx, 4*time.Second)
			_, err := client.Heartbeat(cctx, "t1")
			ccancel()
			if err == nil {
				hbOK.Add(1)
			} else if hbCtx.Err() == nil {
				hbFail.Add(1)
				hbErr.Store(err.Error())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	report := func(step int64) {
		t.Helper()
		if _, err := client.ReportProgress(ctx, &api.ReportProgressRequest{Id: "t1", Generation: 1, Step: step, Loss: 1 / float64(step)}); err != nil {
			t.Fatalf("report step %d: %v", step, err)
		}
	}
	for step := int64(1); step <= 50; step++ {
		report(step)
	}
	sha := strings.Repeat("ab", 32)
	if _, err := client.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "t1", Generation: 1, Step: 50, Sha256: sha, Size: 1234}); err != nil {
		t.Fatal(err)
	}
	before := waitState(t, ctx, client, func(s *fsm.State) bool { return s.Step == 50 && len(s.Checkpoints) == 1 })
	if len(before.Checkpoints) != 1 || before.Step != 50 {
		t.Fatalf("before the kill: checkpoints %v step %d", before.Checkpoints, before.Step)
	}

	// Find the leader and kill -9 it.
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := -1
	for i, id := range ids {
		if id == st.LeaderId {
			old = i
		}
	}
	if old < 0 {
		t.Fatalf("no leader in status %v", st)
	}
	killedAt := time.Now()
	if err := procs[old].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[old].cmd.Wait()

	// A new leader serves: a survivor names another leader and a write through it succeeds.
	survivors := []string{}
	for i := range ids {
		if i != old {
			survivors = append(survivors, grpcAddrs[i])
		}
	}
	sc, err := Dial(survivors, sec, WithAttemptTimeout(300*time.Millisecond), WithBackoff(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	var failover time.Duration
	for {
		cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := sc.Status(cctx)
		if err == nil && st.LeaderId != "" && st.LeaderId != ids[old] {
			_, err = sc.Heartbeat(cctx, "t1")
			if err == nil {
				ccancel()
				failover = time.Since(killedAt)
				break
			}
		}
		ccancel()
		if time.Since(killedAt) > 10*time.Second {
			t.Fatalf("no new leader serving 10s after the kill (logs in %s)", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("leader %s killed; new leader serving after %v", ids[old], failover)
	if failover > 3*time.Second {
		t.Errorf("failover took %v, want within 3s", failover)
	}

	// Reports keep working; nothing committed is lost; the trainer was not dropped.
	for step := int64(51); step <= 60; step++ {
		report(step)
	}
	after := waitState(t, ctx, sc, func(s *fsm.State) bool { return s.Step == 60 })
	if len(after.Checkpoints) != 1 || after.Checkpoints[0].SHA256 != sha || after.Step != 60 ||
		after.Generation.Number != 1 || after.Members["t1"] == nil {
		t.Fatalf("after failover: checkpoints %v step %d generation %d members %v", after.Checkpoints, after.Step, after.Generation.Number, after.Members)
	}
	if len(after.Loss.Points) != 60 {
		t.Fatalf("loss history has %d points, want 60", len(after.Loss.Points))
	}
	hbCancel()
	<-hbDone
	if hbFail.Load() > 0 {
		t.Errorf("%d of %d heartbeats failed through the failover; last: %v", hbFail.Load(), hbFail.Load()+hbOK.Load(), hbErr.Load())
	}

	// The killed replica restarts from its data directory and catches up.
	procs[old] = startProc(t, bin, filepath.Join(dir, ids[old]+".log"), procArgs(old)...)
	var want []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		a, errA := httpStatus(addrs[3*old+2])
		other := (old + 1) % 3
		b, errB := httpStatus(addrs[3*other+2])
		if errA == nil && errB == nil && a.AppliedIndex == b.AppliedIndex && a.AppliedIndex > 0 {
			want = b.State.Encode()
			if bytes.Equal(a.State.Encode(), want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted replica did not catch up (logs in %s): %v %v", dir, errA, errB)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, p := range procs {
		p.cmd.Process.Signal(syscall.SIGTERM)
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("replica %s exited with %v", ids[i], err)
		}
	}
}

// TestMalformedConfigRefused: a malformed run config is refused at submit with one clear line
// per problem, each starting "ddpm: " (the lines after the first lacked it), and a non-zero
// exit, before anything is written.
func TestMalformedConfigRefused(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	addrs := freeAddrs(t, 2)
	base := []string{"coordinator", "--insecure", "--id", "c0", "--raft-addr", addrs[0], "--grpc-addr", addrs[1],
		"--peers", "c0=" + addrs[0] + "=" + addrs[1], "--data-dir", filepath.Join(dir, "data"), "--bootstrap"}
	bad := filepath.Join(dir, "run.yaml")
	os.WriteFile(bad, []byte("preset: mnist\nglobal_batch: 0\nlr: -1\ndataset: \"\"\nsteps: 10\ncheckpoint_every: 50\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--config", bad}, bad + ": invalid run config: dataset is missing\n" +
			"ddpm: " + bad + ": invalid run config: global_batch must be positive, got 0\n" +
			"ddpm: " + bad + ": invalid run config: lr must be in (0, 1], got -1\n" +
			"ddpm: " + bad + ": invalid run config: checkpoint_every 50 is larger than the run (steps 10): give checkpoint_every 10 or less, or more steps\n"},
		{[]string{"--preset", "svhn"}, `unknown preset "svhn" (known: celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist)` + "\n"},
		{[]string{"--preset", "cifar10"}, "preset cifar10: invalid run config: dataset is missing\n"},
	}
	for _, c := range cases {
		cmd := exec.Command(bin, append(slicesClone(base), c.args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want 2", c.args, err)
		}
		if got := stderr.String(); got != "ddpm: "+c.want {
			t.Errorf("%v: stderr\n%s\nwant\nddpm: %s", c.args, got, c.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
			t.Errorf("%v: data dir created for a refused config", c.args)
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// waitState polls the client's replica until cond holds (a minute at most: it bounds a hang) and returns the last state
// read. Status is answered from the local state of whichever replica the client holds, which
// may trail the leader by an entry or two.
func waitState(t *testing.T, ctx context.Context, c *Client, cond func(*fsm.State) bool) *fsm.State {
	t.Helper()
	for wait := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		s, err := c.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cond(s) || time.Now().After(wait) {
			return s
		}
	}
}
