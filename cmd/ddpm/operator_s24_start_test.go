package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ddpm/internal/testutil"
)

// opCoordinator is a `ddpm coordinator` process of these tests; started is closed once it logs
// coordinatorStartedMsg, exited once it has exited (err its Wait error).
type opCoordinator struct {
	cmd     *exec.Cmd
	started chan struct{}
	exited  chan struct{}
	scanned chan struct{} // closed once stderr is read to its end
	err     error
	mu      sync.Mutex // guards stderr
	stderr  bytes.Buffer
}

// log returns what the process has written to stderr so far.
func (p *opCoordinator) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// startOpCoordinator starts bin with args and waits up to limit for its start line; it fails
// the test if the process exits first.
func startOpCoordinator(t *testing.T, bin string, limit time.Duration, args ...string) *opCoordinator {
	t.Helper()
	p := &opCoordinator{cmd: exec.Command(bin, args...), started: make(chan struct{}), exited: make(chan struct{}),
		scanned: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(pr)
		said := false
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.Write(append(sc.Bytes(), '\n'))
			p.mu.Unlock()
			if !said && strings.Contains(sc.Text(), `"msg":"`+coordinatorStartedMsg+`"`) {
				said = true
				close(p.started)
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.exited
	})
	select {
	case <-p.started:
	case <-p.exited:
		<-p.scanned
		t.Fatalf("ddpm %s exited before it started: %v\n%s", strings.Join(args, " "), p.err, p.log())
	case <-time.After(limit):
		t.Fatalf("ddpm %s did not start within %v", strings.Join(args, " "), limit)
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit and the end of its stderr.
func (p *opCoordinator) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("coordinator did not stop within 30 s of SIGTERM")
	}
	<-p.scanned
	if p.err != nil {
		t.Fatalf("coordinator stopped with %v\n%s", p.err, p.log())
	}
}

// runRefused runs bin with args (killed after 20 s: a start that is not refused runs on) and
// checks that it exits with code and prints exactly want on stderr, nothing on stdout.
func runRefused(t *testing.T, bin string, code int, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if got != code || stderr.String() != want || stdout.Len() != 0 {
		t.Errorf("ddpm %s:\nexit %d, stdout %q, stderr %q\nwant exit %d, stderr %q", strings.Join(args, " "), got, stdout.String(),
			stderr.String(), code, want)
	}
}

// procCommand is how the port-in-use line shows process pid's command line: its words joined by
// spaces, cut to 77 characters and "..." past 80.
func procCommand(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\x00", " ")), " ")
	if r := []rune(s); len(r) > 80 {
		s = string(r[:77]) + "..."
	}
	return s
}

// TestOperatorS24CoordinatorStartMistakes: mistakes of an operator who starts the replicas by
// hand, each met at once with one line and exit 2, nothing written:
//   - the same replica started twice (one --data-dir for two processes): "raft.db is in use by
//     process N"; it was exit 1;
//   - a port another process listens on (here the first replica's raft port, started with
//     another --data-dir): the flag, the port's holder by pid and command line, and what to do,
//     before the new --data-dir is made; it was exit 1, "raft transport on ADDR: listen tcp ...:
//     bind: address already in use", with the folder made;
//   - a --peers list that is not the one the cluster began with (c2 left out, or at another
//     raft address): both lists; it ran, and forwarded writes failed with "no leader known"
//     while the leader was the replica its list left out.
//
// The right --peers still starts.
func TestOperatorS24CoordinatorStartMistakes(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0 := freeAddr(t), freeAddr(t)
	peers := "c0=" + raft0 + "=" + grpc0 + ",c1=127.0.0.1:1=127.0.0.1:2,c2=127.0.0.1:3=127.0.0.1:4"
	dir := filepath.Join(t.TempDir(), "c0")
	args := func(dataDir, peers string) []string {
		return []string{"coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0, "--peers", peers,
			"--data-dir", dataDir, "--bootstrap", "--insecure"}
	}
	c0 := startOpCoordinator(t, bin, 30*time.Second, args(dir, peers)...)
	pid := c0.cmd.Process.Pid

	runRefused(t, bin, 2, fmt.Sprintf("ddpm: coordinator: %s is in use by process %d (another coordinator on --data-dir %s?)\n",
		filepath.Join(dir, "raft.db"), pid, dir), args(dir, peers)...)

	other := filepath.Join(t.TempDir(), "c0-other")
	runRefused(t, bin, 2, fmt.Sprintf("ddpm: coordinator: cannot listen on --raft-addr %s: the port is in use by pid %d (%s): "+
		"stop that process, or give this replica other ports in every replica's --peers\n", raft0, pid, procCommand(t, pid)),
		args(other, peers)...)
	mustNotExist(t, other)

	c0.stop(t)
	held := "c0=" + raft0 + ",c1=127.0.0.1:1,c2=127.0.0.1:3"
	for _, wrong := range []struct{ peers, listed string }{
		{"c0=" + raft0 + "=" + grpc0 + ",c1=127.0.0.1:1=127.0.0.1:2", "c0=" + raft0 + ",c1=127.0.0.1:1"},
		{"c0=" + raft0 + "=" + grpc0 + ",c1=127.0.0.1:1=127.0.0.1:2,c2=127.0.0.1:5=127.0.0.1:4", "c0=" + raft0 + ",c1=127.0.0.1:1,c2=127.0.0.1:5"},
	} {
		runRefused(t, bin, 2, "ddpm: coordinator: --peers is not the cluster's raft configuration: --data-dir "+dir+
			" holds replicas "+held+" (id=raft address), --peers lists "+wrong.listed+
			"; give every replica the --peers the cluster began with, or, if this --peers is that list and the data dir "+
			"was bootstrapped with another, move "+dir+" aside and start this replica again (it catches up from the others)\n",
			args(dir, wrong.peers)...)
	}
	startOpCoordinator(t, bin, 30*time.Second, args(dir, peers)...).stop(t)

	// A wildcard --raft-addr (which --peers' address matches as a listen address) is no address
	// for the others to dial: exit 2, nothing written; it was exit 1.
	wild := filepath.Join(t.TempDir(), "c0-wild")
	_, port, _ := strings.Cut(raft0, ":")
	runRefused(t, bin, 2, "ddpm: coordinator: --raft-addr 0.0.0.0:"+port+": must name an IP other peers can reach (raft advertises it to them)\n",
		"coordinator", "--id", "c0", "--raft-addr", "0.0.0.0:"+port, "--grpc-addr", grpc0, "--peers", peers, "--data-dir", wild, "--insecure")
	mustNotExist(t, wild)
}

// TestOperatorS24CoordinatorDirWithTrainerVolume: a replica's --data-dir into which a trainer
// wrote its volume (the trainer given the coordinator's folder by mistake) is refused on the
// replica's restart with a line that says both are there and what to move, exit 2, raft.db
// untouched; it was called only "a trainer's folder (checkpoints.db) ...; give a new folder",
// which would throw the replica's raft data away.
func TestOperatorS24CoordinatorDirWithTrainerVolume(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0 := freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "c0")
	args := []string{"coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0, "--peers", "c0=" + raft0 + "=" + grpc0,
		"--data-dir", dir, "--bootstrap", "--insecure"}
	startOpCoordinator(t, bin, 30*time.Second, args...).stop(t)
	before, err := os.ReadFile(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, "checkpoints.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.WriteFile(filepath.Join(dir, "run.yaml"), []byte("preset: mnist\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runRefused(t, bin, 2, "ddpm: coordinator: --data-dir "+dir+" holds this replica's raft data (raft.db) and a trainer's "+
		"checkpoints.db (a trainer was given it as its --data-dir): move checkpoints.db and the trainer's run.yaml to a "+
		"folder of their own (that trainer's volume), then start this replica again\n", args...)
	after, err := os.ReadFile(filepath.Join(dir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("raft.db changed")
	}
}
