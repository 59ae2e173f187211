package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestNewUserS25BothFilesDamagedNotMovedAside: a ddpm local run killed outright (both trainers
// stopped, then two SIGINTs: every child killed without leaving the cluster) leaves both trainers
// listed as members holding the newest committed checkpoint. With both checkpoints.db files then
// damaged, `ddpm local --resume` must not let each trainer move its file aside for the other's
// stale entry: nothing would hold the checkpoint any more, and the run waited for ever on two
// empty volumes fetching from each other, with no line saying so (both files moved aside within
// seconds before the fix). Each trainer waits for a holder that shows a live process, none does,
// so one is refused with status 2 and ddpm local stops the run (exit 1) with its line; both
// files stay where they were, byte for byte.
func TestNewUserS25BothFilesDamagedNotMovedAside(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ddpm local twice")
	}
	// A heartbeat timeout of a minute: the restarted leader drops the killed trainers' entries
	// only a minute after its election, well after the trainers asked about them.
	run := makeLocalRun(t, 2, func(r *config.Run) {
		r.Steps, r.CheckpointEvery, r.HeartbeatTimeout = 100000, 4, config.Duration(time.Minute)
	})
	pidOf := func(name string) int {
		b, err := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".pid"))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return pid
	}
	killAll := func() {
		// A stopped child does not act on the SIGTERM its parent's death sends it.
		for _, n := range []string{"coordinator-0", "trainer-0", "trainer-1"} {
			if pid := pidOf(n); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	start := func(limit time.Duration) (*exec.Cmd, *lockedLog, chan error) {
		ctx, cancel := context.WithTimeout(context.Background(), limit)
		t.Cleanup(cancel)
		cmd := exec.CommandContext(ctx, testutil.DDPMBinary(t), "local", "--resume", run, "--quiet")
		live := &lockedLog{}
		cmd.Stdout, cmd.Stderr = live, live
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() { killAll(); cmd.Process.Kill() })
		return cmd, live, exited
	}

	// Phase 1: train past a committed checkpoint, then kill everything.
	cmd, live, exited := start(4 * time.Minute)
	addrs, certs, err := runFolderCluster(run)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := coordinator.Dial(addrs, tlsauthtest.Load(t, certs, nil))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, cli, "a committed checkpoint both trainers hold", 2*time.Minute, func(s *fsm.State) bool {
		ck := s.LatestCheckpoint()
		return ck != nil && len(ck.Holders) == 2
	})
	cli.Close()
	for _, n := range []string{"trainer-0", "trainer-1"} {
		if err := syscall.Kill(pidOf(n), syscall.SIGSTOP); err != nil {
			t.Fatalf("%s: %v\n%s", n, err, live)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(live.String(), "ddpm local: stopping"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no stopping line within a minute of SIGINT:\n%s", live)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("ddpm local still running a minute after the second SIGINT:\n%s", live)
	}
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("first run: exit %d, want 130\n%s", code, live)
	}

	// Phase 2: both files damaged, resume.
	var dbs []string
	damaged := map[string][]byte{}
	for i := range 2 {
		db := filepath.Join(localrun.TrainerDir(run, i), trainer.CheckpointFile)
		dbs = append(dbs, db)
		damaged[db] = damageMetaS25(t, db)
	}
	cmd, live, exited = start(4 * time.Minute)
	var werr error
wait:
	for {
		select {
		case werr = <-exited:
			break wait
		case <-time.After(100 * time.Millisecond):
		}
		for _, db := range dbs {
			if aside, _ := filepath.Glob(db + ".damaged-*"); len(aside) > 0 {
				t.Fatalf("moved aside %v although no live trainer holds the checkpoint (both files damaged):\n%s", aside, live)
			}
		}
	}
	var ee *exec.ExitError
	if werr != nil && !errors.As(werr, &ee) {
		t.Fatal(werr)
	}
	out := strings.TrimSpace(live.String())
	last := out[strings.LastIndex(out, "\n")+1:]
	want := regexp.MustCompile(`^ddpm: (trainer-[01]) failed at start-up \(exit status 2\): checkpoint: (\S+) is not a readable checkpoint file \(invalid database\): corrupt checkpoint; ` +
		`it was left as it is: the run's newest committed checkpoint \(step [0-9]+\) was held by (trainer-[01]), none of whom is a member holding it now with a live process \(waited 1m0s\); ` +
		`start a trainer that holds it, then resume the run \(ddpm local --resume ` + regexp.QuoteMeta(run) + `\) \(see (\S+)\)$`)
	m := want.FindStringSubmatch(last)
	if code := cmd.ProcessState.ExitCode(); code != 1 || m == nil {
		t.Fatalf("exit %d, last line\n%s\nwant exit 1 and a line matching\n%s\n(all output:\n%s)", code, last, want, out)
	}
	if m[2] != filepath.Join(run, "trainer-"+m[1][len("trainer-"):], trainer.CheckpointFile) || m[3] == m[1] ||
		m[4] != filepath.Join(run, localrun.LogsDir, m[1]+".log") {
		t.Errorf("the line names %s, its file %s, holder %s, log %s: not one trainer's own", m[1], m[2], m[3], m[4])
	}
	for _, db := range dbs {
		if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, damaged[db]) {
			t.Errorf("%s after the refusal: %v; want it as it was", db, err)
		}
	}
}

// TestNewUserS25DamagedFileCoordinatorsSilent: a cluster trainer whose checkpoints.db is damaged
// and whose coordinators do not answer (nothing listens at --coordinator) exits 1 after the
// 10 s it gives them, the file left byte for byte, with a line saying that the coordinators did
// not answer and to start it again once they do. The line was the generic one of a damaged file,
// "move it aside and start the trainer again: it takes the run's committed checkpoint from the
// cluster": the very step the trainer declined, the file being maybe the run's only copy, and
// no word of the coordinators.
func TestNewUserS25DamagedFileCoordinatorsSilent(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	_, cfgPath := procRun(t, dir, 20, 1, 2, 5*time.Second, nil)
	vol := filepath.Join(dir, "vol")
	db, damaged := damagedEmptyVolumeS25(t, vol)
	dead := freeAddr(t) // nothing listens there
	out, errOut, code := ddpmRunFor(t, 2*time.Minute, bin, "trainer", "--id", "t0", "--coordinator", dead, "--listen", freeAddr(t),
		"--data-dir", vol, "--config", cfgPath, "--certs", tlsauthtest.Dir(t))
	want := "ddpm: checkpoint: " + db + " is not a readable checkpoint file (invalid database): corrupt checkpoint; it was left as it is: the coordinators (" + dead +
		") did not answer within 10s, so whether another trainer holds the run's newest committed checkpoint is not known; start the trainer again once they answer " +
		"(it moves the file aside itself when one does)"
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 1 || lines[len(lines)-1] != want {
		t.Errorf("status %d, last line\n%s\nwant status 1 and\n%s\n(stdout %q, stderr:\n%s)", code, lines[len(lines)-1], want, out, errOut)
	}
	if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, damaged) {
		t.Errorf("%s after the refusal: %v; want it as it was", db, err)
	}
	if aside, _ := filepath.Glob(db + ".damaged-*"); len(aside) != 0 {
		t.Errorf("moved aside: %v", aside)
	}
}

// TestNewUserS25DamagedFileRunSucceeded: a cluster trainer whose checkpoints.db is damaged,
// started again after its run succeeded (a pod restarted while the run's pods stay up), is
// refused at once with status 2 and a line saying that the run has succeeded, the file left
// byte for byte. It waited a minute for a holder of the final checkpoint to join (the finished
// trainers are members no more), then said "start a trainer that holds it", which cannot help.
func TestNewUserS25DamagedFileRunSucceeded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 8, 1, 1, 5*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	vol := filepath.Join(dir, "t0")
	t0 := launchTrainer(t, bin, vol, "t0", freeAddr(t), coord, cfg, certs)
	finishProcs(t, cli, run, map[string]*trainerProc{"t0": t0})

	db := filepath.Join(vol, trainer.CheckpointFile)
	damaged := damageMetaS25(t, db)
	start := time.Now()
	out, errOut, code := ddpmRunFor(t, 2*time.Minute, bin, "trainer", "--id", "t0", "--coordinator", coord, "--listen", freeAddr(t),
		"--data-dir", vol, "--config", cfg, "--certs", certs)
	took := time.Since(start)
	want := "ddpm: checkpoint: " + db + " is not a readable checkpoint file (invalid database): corrupt checkpoint; it was left as it is: " +
		"the run has succeeded (step 8), so nothing is left to train and the run needs no file of this trainer; restore it from a copy, or move it aside " +
		"(ddpm checkpoint fetch copies the final checkpoint from a trainer that holds it; ddpm status lists them)"
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 2 || lines[len(lines)-1] != want || took > 30*time.Second {
		t.Errorf("status %d after %v, last line\n%s\nwant status 2 at once and\n%s\n(stdout %q, stderr:\n%s)", code, took.Round(time.Millisecond), lines[len(lines)-1], want, out, errOut)
	}
	if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, damaged) {
		t.Errorf("%s after the refusal: %v; want it as it was", db, err)
	}
	if aside, _ := filepath.Glob(db + ".damaged-*"); len(aside) != 0 {
		t.Errorf("moved aside: %v", aside)
	}
}

// TestNewUserS25FetchHTTPSPortNamed: `ddpm checkpoint fetch` given an HTTPS port (a --http-addr
// served with --http-tls, here a coordinator's; a trainer's answers the same way) says that it is
// one, exit 2. gRPC reports the server's 404 as Unimplemented, which the line took for a
// coordinator's gRPC port ("serves no checkpoint transfer (a coordinator's address? ...)"), wrong
// for a trainer's --http-addr.
func TestNewUserS25FetchHTTPSPortNamed(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	raft, grpcAddr, https := freeAddr(t), freeAddr(t), freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpcAddr,
		"--http-addr", https, "--http-tls", "--peers", "c0="+raft+"="+grpcAddr, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--certs", certs)
	dbOut := filepath.Join(t.TempDir(), "x.db")
	out, errOut, code := ddpmRun(t, bin, "checkpoint", "fetch", https, "--certs", certs, "--step", "10", "--out", dbOut)
	want := "ddpm: checkpoint fetch: " + https + " is an HTTPS port (a ddpm trainer's or coordinator's --http-addr with --http-tls), not a trainer's checkpoint transfer: " +
		"give a trainer's --listen address (ddpm status lists them)\n"
	if code != 2 || out != "" || errOut != want {
		t.Errorf("ddpm checkpoint fetch %s: status %d, stdout %q, stderr %q\nwant status 2 and stderr %q", https, code, out, errOut, want)
	}
	if _, err := os.Stat(dbOut); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--out %s after the refusal: %v; want no file", dbOut, err)
	}
}
