package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"ddpm/allreduce"
	"ddpm/api"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestCLIS25WrongPortNamedAtOnce: status, loss and checkpoint rollback given a real
// coordinator's --http-addr or --raft-addr as --coordinator (and checkpoint fetch given them as
// the trainer's address) say at the first contact, in one line with status 2, what answers
// there and which address to give: the HTTP port names the coordinator and its leader's gRPC
// address (read from its /api/status), the raft port is known by the TLS protocol it picks. They
// waited the whole --timeout (30 s here) and exited 1 with a guess ("the address answers in plain
// text: a coordinator run with --insecure ..." for the HTTP port). An HTTPS port (--http-tls),
// which answers gRPC's call with 404, is named as such (it was "answers but serves no
// coordinator (a trainer's --listen address? ...)").
func TestCLIS25WrongPortNamedAtOnce(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	raft0, grpc0, http0 := startLeadingReplica(t, bin, certs, "c0")
	// A second one-replica cluster serves its HTTP port with --http-tls.
	_, grpc1, https1 := startLeadingReplica(t, bin, certs, "c1", "--http-tls")
	httpWhat := http0 + " is the HTTP port (--http-addr) of ddpm coordinator c0 (it answered HTTP/1.1), not its gRPC port"
	raftWhat := raft0 + " is the raft port (--raft-addr) of a ddpm coordinator (its TLS offers raft's protocol ddpm-raft/1, not gRPC's)"
	httpHint := ": --coordinator takes a coordinator's --grpc-addr, e.g. " + grpc0 + " (the leader's)"
	raftHint := ": --coordinator takes a coordinator's --grpc-addr (the last field of its --peers entry ID=RAFT=GRPC)"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--coordinator", http0}, "ddpm: status: " + httpWhat + httpHint},
		{[]string{"status", "--coordinator", raft0}, "ddpm: status: " + raftWhat + raftHint},
		{[]string{"status", "--coordinator", https1}, "ddpm: status: " + https1 + " is the HTTPS port (--http-addr, --http-tls) of ddpm coordinator c1, not its gRPC port: " +
			"--coordinator takes a coordinator's --grpc-addr, e.g. " + grpc1 + " (the leader's)"},
		{[]string{"loss", "--coordinator", http0}, "ddpm: loss: " + httpWhat + httpHint},
		{[]string{"loss", "--coordinator", raft0}, "ddpm: loss: " + raftWhat + raftHint},
		{[]string{"checkpoint", "rollback", "--to-step", "0", "--coordinator", http0}, "ddpm: checkpoint rollback: " + httpWhat + httpHint},
		{[]string{"checkpoint", "rollback", "--to-step", "0", "--coordinator", raft0}, "ddpm: checkpoint rollback: " + raftWhat + raftHint},
	} {
		start := time.Now()
		out, errOut, code := ddpmRun(t, bin, append(tc.args, "--certs", certs, "--timeout", "30s")...)
		took := time.Since(start)
		if code != 2 || out != "" || errOut != tc.want+"\n" || took > 10*time.Second {
			t.Errorf("ddpm %s: status %d after %v, stdout %q, stderr %q\nwant status 2 at once and stderr %q",
				strings.Join(tc.args, " "), code, took.Round(time.Millisecond), out, errOut, tc.want)
		}
	}
	dbOut := filepath.Join(t.TempDir(), "x.db")
	for _, tc := range []struct{ addr, what string }{{http0, httpWhat}, {raft0, raftWhat}} {
		out, errOut, code := ddpmRun(t, bin, "checkpoint", "fetch", tc.addr, "--certs", certs, "--step", "10", "--out", dbOut)
		want := "ddpm: checkpoint fetch: " + tc.what + ": give a trainer's --listen address (ddpm status lists them)\n"
		if code != 2 || out != "" || errOut != want {
			t.Errorf("ddpm checkpoint fetch %s: status %d, stdout %q, stderr %q\nwant status 2 and stderr %q", tc.addr, code, out, errOut, want)
		}
	}
}

// startLeadingReplica starts `ddpm coordinator` as the one replica id of a new cluster on free
// raft, gRPC and HTTP addresses (extra flags appended), and waits until `ddpm status` at its
// gRPC address names it the leader: the wrong-port lines of its HTTP port name the leader's
// gRPC address.
func startLeadingReplica(t *testing.T, bin, certs, id string, extra ...string) (raftAddr, grpcAddr, httpAddr string) {
	t.Helper()
	raftAddr, grpcAddr, httpAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, append([]string{"coordinator", "--id", id, "--raft-addr", raftAddr, "--grpc-addr", grpcAddr,
		"--http-addr", httpAddr, "--peers", id + "=" + raftAddr + "=" + grpcAddr, "--data-dir", filepath.Join(t.TempDir(), id),
		"--bootstrap", "--certs", certs}, extra...)...)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, _, code := ddpmRun(t, bin, "status", "--coordinator", grpcAddr, "--certs", certs, "--timeout", "5s")
		if code == 0 && strings.Contains(out, "(leader "+id+",") {
			return raftAddr, grpcAddr, httpAddr
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s did not lead within 30 s: status %d\n%s", id, code, out)
		}
	}
}

// TestCLIS25RollbackNoRunOrFinishedExit2: checkpoint rollback against a real coordinator with
// no run configured, and against one whose run finished (its last step's checkpoint committed),
// is refused with its one line and status 2: the command cannot succeed by being tried again. It
// exited 1, the status of a failure of the machine.
func TestCLIS25RollbackNoRunOrFinishedExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	// No run: a replica started without a run config.
	certs := tlsauthtest.Dir(t)
	grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: t.TempDir(),
		Bootstrap: true, Version: "test", Security: tlsauthtest.Load(t, certs, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	out, errOut, code := ddpmRun(t, bin, "checkpoint", "rollback", "--coordinator", grpcAddr, "--certs", certs, "--to-step", "0", "--yes")
	want := "ddpm: checkpoint rollback: no run config submitted yet: no run configured: there is nothing to roll back\n"
	if code != 2 || out != "" || errOut != want {
		t.Errorf("rollback with no run: status %d, stdout %q, stderr %q\nwant status 2 and stderr %q", code, out, errOut, want)
	}

	// Finished: the one trainer reports every step and the last step's checkpoint.
	addr, cli, gen := startMonitoredNode(t, 20)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, step := range []int64{10, 20} {
		if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "trainer-a", Generation: gen, Step: step,
			Sha256: strings.Repeat("ab", 32), Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	st := waitFor(t, cli, "the run's success", 20*time.Second, func(s *fsm.State) bool { return s.Status.Terminal() })
	if st.Status != fsm.StatusSucceeded {
		t.Fatalf("run %s (%s), want succeeded", st.Status, st.Reason)
	}
	out, errOut, code = ddpmRun(t, bin, "checkpoint", "rollback", "--coordinator", addr, "--certs", monitorCerts, "--to-step", "10", "--yes")
	want = "ddpm: checkpoint rollback: run finished: the run has succeeded; a finished run is not rolled back\n"
	if code != 2 || out != "" || errOut != want {
		t.Errorf("rollback of a finished run: status %d, stdout %q, stderr %q\nwant status 2 and stderr %q", code, out, errOut, want)
	}
}

// TestCLIS25StatusTrainerPortExit2: ddpm status and loss given a trainer's --listen address (a
// real gRPC server on loopback with the run's certificates, serving the checkpoint transfer and
// the ring all-reduce, as a trainer's port does, and no coordinator service) say so at once in
// their one line, with status 2. The line is the one they printed, with the command's name in
// front instead of "coordinator: not a coordinator:"; the status was 1.
func TestCLIS25StatusTrainerPortExit2(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append(tlsauthtest.Load(t, certs, nil).ServerOptions(), allreduce.ServerOptions()...)...)
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "checkpoints.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkpoint.RegisterTransfer(srv, st)
	allreduce.Register(srv)
	go srv.Serve(ln)
	defer srv.Stop()
	addr := ln.Addr().String()
	for _, name := range []string{"status", "loss"} {
		start := time.Now()
		out, errOut, code := ddpmRun(t, bin, name, "--coordinator", addr, "--certs", certs, "--timeout", "30s")
		want := "ddpm: " + name + ": " + addr + " answers but serves no coordinator (a trainer's --listen address? use the coordinators' --grpc-addr)\n"
		if code != 2 || out != "" || errOut != want || time.Since(start) > 10*time.Second {
			t.Errorf("ddpm %s at a trainer's port: status %d after %v, stdout %q, stderr %q\nwant status 2 at once and stderr %q",
				name, code, time.Since(start).Round(time.Millisecond), out, errOut, want)
		}
	}
}

// TestCLIS25LocalSecondInterruptKills: a real `ddpm local` (one coordinator, two trainers)
// whose trainers cannot stop (SIGSTOPped after the run committed a checkpoint) is sent SIGINT,
// which starts its stop with --grace 90s, then SIGINT again: it kills every child at once and
// exits 130 with one line naming them, well within the grace; no child is left, and the
// committed checkpoint is on trainer-0's volume and verifies. It ignored the second Ctrl-C and
// waited out the grace.
func TestCLIS25LocalSecondInterruptKills(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	run := makeLocalRun(t, 2, func(r *config.Run) {
		r.Steps, r.CheckpointEvery, r.HeartbeatTimeout = 100000, 5, config.Duration(10*time.Second)
	})
	cmd, live, exited, st := startLocalToCheckpoint(t, "--resume", run, "--quiet", "--grace", "90s")
	pidOf := func(name string) int {
		b, err := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".pid"))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	names := []string{"coordinator-0", "trainer-0", "trainer-1"}
	t.Cleanup(func() {
		// A stopped child does not act on the SIGTERM its parent's death sends it.
		for _, n := range names {
			if pid := pidOf(n); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	step := st.Checkpoints[len(st.Checkpoints)-1].Step
	for _, n := range []string{"trainer-0", "trainer-1"} {
		pid := pidOf(n)
		if pid <= 0 {
			t.Fatalf("%s has no pid file\n%s", n, live)
		}
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(live.String(), "ddpm local: stopping"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no stopping line within 30 s of SIGINT:\n%s", live)
		}
	}
	// A signal within sameStopWindow of the first is the same stop (TestLocalS26DoubleSignalOneStop);
	// the stopping line is seen after ddpm local received the first, so this is past the window.
	time.Sleep(sameStopWindow + time.Second)
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var werr error
	select {
	case werr = <-exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("ddpm local still running 60 s after the second SIGINT (grace 90s):\n%s", live)
	}
	took := time.Since(start)
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.Fatal(werr)
	}
	lines := strings.Split(strings.TrimSpace(live.String()), "\n")
	want := "ddpm: interrupted again: killed coordinator-0, trainer-0, trainer-1 at once, without their clean stop; the checkpoints committed so far are kept; continue with: ddpm local --resume " + run
	if code := cmd.ProcessState.ExitCode(); code != 130 || lines[len(lines)-1] != want || took > 20*time.Second {
		t.Fatalf("after the second SIGINT: exit %d in %v, last line %q\nwant exit 130 at once and %q\n%s", code, took.Round(time.Millisecond), lines[len(lines)-1], want, live)
	}
	for _, n := range names {
		if pid := pidOf(n); pid > 0 {
			t.Errorf("%s (pid %d) is left behind", n, pid)
		}
	}
	if held := heldSteps(run); !slices.Contains(held, step) {
		t.Errorf("trainer-0's volume holds steps %v, not the committed step %d", held, step)
	}
	if out, errOut, code := ddpmRun(t, bin, "checkpoint", "verify", run); code != 0 {
		t.Errorf("checkpoint verify after the kill: status %d\n%s%s", code, out, errOut)
	}
}

// TestCLIS25ResumeOtherUsersListener: `ddpm local --resume RUN` run as another user (uid 65534,
// a setuid child of this test, which runs as root) meets a recorded port on which a process of
// root listens (this test's own socket), whose /proc/PID/fd that user may not read: it refuses
// at once, in one line naming the port, the user and the uid, with status 2, and local.lock is
// not created. It waited 65 s for the port. Skipped unless the test runs as root (only root can
// start a process of another user); TestCLIS25ClaimPortsOtherUsersListener in internal/localrun
// covers the decision from a real /proc/net/tcp line on any machine.
func TestCLIS25ResumeOtherUsersListener(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run ddpm local as another user")
	}
	const uid = 65534
	run := makeLocalRun(t, 1, nil)
	// The user reaches the run folder through its parents and owns it; it runs its own copy of
	// the binary (the test build's folder is root's alone).
	for dir := filepath.Dir(run); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := filepath.Walk(run, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, uid)
	}); err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testutil.DDPMBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "ddpm")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	port := man.CoordinatorPorts[0].GRPC
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "local", "--resume", run)
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), "HOME="+binDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ddpm: coordinator-0's port 127.0.0.1:%d (recorded in %s) is listened on by a process of user root (uid 0) that this user cannot look into, which is not this run's (its processes run as this user, uid %d): have it stopped, then resume again\n",
		port, filepath.Join(run, localrun.ManifestFile), uid)
	if code := cmd.ProcessState.ExitCode(); code != 2 || stderr.String() != want || stdout.Len() != 0 || took > 20*time.Second {
		t.Fatalf("ddpm local --resume as uid %d: exit %d after %v, stdout %q, stderr %q\nwant exit 2 at once and stderr %q",
			uid, code, took.Round(time.Millisecond), stdout.String(), stderr.String(), want)
	}
	if _, err := os.Stat(filepath.Join(run, localrun.LockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("local.lock after the refusal: %v, want none", err)
	}
}
