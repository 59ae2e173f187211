package main

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// stableName is a TCP forwarder standing for a stable DNS name (a StatefulSet pod's): its
// address stays while the process behind it changes. Moving it closes the connections to the
// former target, as a pod's restart does.
type stableName struct {
	ln    net.Listener
	mu    sync.Mutex
	to    string
	conns []net.Conn
}

func newStableName(t *testing.T, to string) *stableName {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &stableName{ln: ln, to: to}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go n.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close(); n.point("") })
	return n
}

func (n *stableName) addr() string { return n.ln.Addr().String() }

// point sends new connections to addr and closes the current ones.
func (n *stableName) point(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.to = addr
	for _, c := range n.conns {
		c.Close()
	}
	n.conns = nil
}

func (n *stableName) serve(c net.Conn) {
	n.mu.Lock()
	to := n.to
	n.mu.Unlock()
	d, err := net.DialTimeout("tcp", to, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	n.mu.Lock()
	n.conns = append(n.conns, c, d)
	n.mu.Unlock()
	go func() { io.Copy(d, c); d.Close() }()
	io.Copy(c, d)
	c.Close()
}

// startAdvertised starts `ddpm trainer --id id --listen listen --advertise advertise` on a fresh
// volume under dir; the test's end kills it if it still runs.
func startAdvertised(t *testing.T, bin, dir, id, listen, advertise, coord, cfg, certs string) *trainerProc {
	t.Helper()
	return launchTrainer(t, bin, filepath.Join(dir, fmt.Sprintf("%s-%s", id, filepath.Base(listen))), id, listen, coord, cfg, certs,
		"--advertise", advertise)
}

// TestStalledTrainerReplacedAtSameAddressExits: as TestStalledTrainerReplacedExits, but t1 is
// reached through a stable name (both of its processes --advertise the same address, as
// StatefulSet pods do). The stopped t1 is dropped, a new process joins as t1 from that same
// address, and the old one, SIGCONTed, is refused as a stale incarnation and exits with status
// 3 and its one line: the process nonce tells the newer process from its own rejoin. The old
// process used to take the refusal at its own address for its own rejoin and retry its watch
// forever, never ready.
func TestStalledTrainerReplacedAtSameAddressExits(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 24, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)

	t0 := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	oldListen := freeAddr(t)
	name := newStableName(t, oldListen)
	old := startAdvertised(t, bin, dir, "t1", oldListen, name.addr(), coord, cfg, certs)
	first := waitFor(t, cli, "steps of the 2-trainer ring", 3*time.Minute, func(s *fsm.State) bool {
		m := s.Members["t1"]
		return s.Generation.World == 2 && m != nil && m.Address == name.addr() && s.Step >= 4
	})
	oldInc := first.Members["t1"].Incarnation

	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, cli, "drop of the stopped t1", 30*time.Second, func(s *fsm.State) bool { return s.Members["t1"] == nil })
	newListen := freeAddr(t)
	name.point(newListen)
	repl := startAdvertised(t, bin, dir, "t1", newListen, name.addr(), coord, cfg, certs)
	joined := waitFor(t, cli, "ring with the new t1", time.Minute, func(s *fsm.State) bool {
		m := s.Members["t1"]
		return m != nil && m.Incarnation > oldInc && m.State == fsm.MemberActive && s.Generation.World == 2
	})
	newInc := joined.Members["t1"].Incarnation
	if m := joined.Members["t1"]; m.Address != name.addr() || m.Nonce == "" || m.Nonce == first.Members["t1"].Nonce {
		t.Fatalf("the new t1: %+v; want the address %s and a process nonce other than the old one's (%q)", m, name.addr(), first.Members["t1"].Nonce)
	}

	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	expectReplaced(t, old, name.addr(), newInc)
	final := finishWith(t, cli, run, t0, repl)
	if m := final.Members["t1"]; m == nil || m.Incarnation != newInc {
		t.Fatalf("t1 at the end: %+v, want incarnation %d", m, newInc)
	}
}
