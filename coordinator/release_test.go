package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/raft"

	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// testRun is a valid run config (the mnist preset) for commands that need one.
func testRun() config.Run {
	run, err := config.Preset("mnist")
	if err != nil {
		panic(err)
	}
	return run
}

// fill proposes n no-op commands (leaves of a non-member, each with its own request id, so the
// dedup table grows) on replica i.
func (c *inmemCluster) fill(i, n int, tag string) {
	for k := range n {
		c.propose(i, fsm.Command{Kind: fsm.KindLeave, RequestID: fmt.Sprintf("%s-%d", tag, k), Leave: &fsm.Leave{ID: "nobody"}})
	}
}

// waitHalted waits (bubble time) for replica i to halt and returns its error.
func (c *inmemCluster) waitHalted(i int) *ReleaseMismatchError {
	c.t.Helper()
	select {
	case <-c.reps[i].Halted():
	case <-time.After(10 * time.Second):
		c.t.Fatalf("r%d did not halt within 10s", i)
	}
	var m *ReleaseMismatchError
	if !errors.As(c.reps[i].HaltError(), &m) || !errors.Is(m, ErrReleaseMismatch) {
		c.t.Fatalf("r%d halted with %v, want a *ReleaseMismatchError", i, c.reps[i].HaltError())
	}
	// Shut down: it neither votes nor campaigns, and proposes nothing.
	deadline := time.Now().Add(5 * time.Second)
	for c.reps[i].Raft().State() != raft.Shutdown && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := c.reps[i].Raft().State(); st != raft.Shutdown {
		c.t.Fatalf("halted r%d is %v, want Shutdown", i, st)
	}
	if _, err := c.reps[i].Propose(context.Background(), fsm.Command{Kind: fsm.KindExpire}); !errors.Is(err, ErrShutdown) {
		c.t.Fatalf("propose on halted r%d: %v, want ErrShutdown", i, err)
	}
	return m
}

// state returns replica i's state encoded.
func (c *inmemCluster) state(i int) []byte {
	var b []byte
	c.reps[i].View(func(s *fsm.State) { b = s.Encode() })
	return b
}

// releaseOrNil returns the release record in force at replica i, or nil.
func (c *inmemCluster) releaseOrNil(i int) *fsm.Release {
	var rel *fsm.Release
	c.reps[i].View(func(s *fsm.State) {
		if s.Release != nil {
			r := *s.Release
			rel = &r
		}
	})
	return rel
}

// release returns the release record in force at replica i.
func (c *inmemCluster) release(i int) fsm.Release {
	c.t.Helper()
	rel := c.releaseOrNil(i)
	if rel == nil {
		c.t.Fatalf("r%d has no release record", i)
	}
	return *rel
}

// agree waits until replicas is apply the same state and returns it.
func (c *inmemCluster) agree(is ...int) []byte {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		same := true
		for _, i := range is[1:] {
			if c.reps[i].AppliedIndex() != c.reps[is[0]].AppliedIndex() || !bytes.Equal(c.state(i), c.state(is[0])) {
				same = false
			}
		}
		if same {
			return c.state(is[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("replicas %v did not reach one state within 10s", is)
	return nil
}

func stoppedLine(replica string, rules int, term uint64, leaderRules int) string {
	return fmt.Sprintf("coordinator: replica %s (ddpm v-rules%d, state machine rules %d) stopped: the leader of raft term %d runs "+
		"ddpm v-rules%d with state machine rules %d, and replicas of two rules versions may apply one log differently; "+
		"run every coordinator and trainer of a run on one release: stop the whole run, then start it all on the new release "+
		"(README, \"Upgrading `ddpm`\")", replica, rules, rules, term, leaderRules, leaderRules)
}

// TestFollowerOfOtherRulesStops: two replicas of this release's rules run a cluster of three; the
// third starts on other rules and stops on the leader's release record with the exact line,
// whether it applies the record from the log or receives it in a snapshot (the leader compacted
// its log): it applies nothing (its state stays the empty one), its raft member is shut down,
// and the two others keep taking commands and agree.
func TestFollowerOfOtherRulesStops(t *testing.T) {
	for _, tc := range []struct {
		name     string
		snapshot bool
	}{{"record in the log", false}, {"record in a snapshot", true}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newInmemStores(t, 3)
				defer c.shutdown()
				c.rules[2] = fsm.RulesVersion + 1
				c.start(0, true)
				c.start(1, true)
				l := c.leader(0, 1)
				// The new leader records its release unasked.
				for end := time.Now().Add(time.Second); c.releaseOrNil(l) == nil && time.Now().Before(end); {
					time.Sleep(10 * time.Millisecond)
				}
				rel := c.release(l)
				c.propose(l, fsm.Command{Kind: fsm.KindSubmit, Submit: &fsm.Submit{Run: testRun()}})
				if want := (fsm.Release{Version: c.version(l), Rules: fsm.RulesVersion, Term: c.reps[l].Raft().CurrentTerm()}); rel != want {
					t.Fatalf("leader's release record %+v, want %+v", rel, want)
				}
				if tc.snapshot {
					c.fill(l, 40, "before")
					if err := c.reps[l].Raft().Snapshot().Error(); err != nil {
						t.Fatal(err)
					}
					if first, _ := c.stores[l].FirstIndex(); first <= 3 {
						t.Fatalf("leader's log starts at %d after a snapshot: r2 would not need the snapshot", first)
					}
				}
				c.start(2, true)
				m := c.waitHalted(2)
				if got, want := m.Error(), stoppedLine("r2", fsm.RulesVersion+1, rel.Term, fsm.RulesVersion); got != want {
					t.Fatalf("halt line\n got %s\nwant %s", got, want)
				}
				if got := c.state(2); !bytes.Equal(got, fsm.New().Encode()) {
					t.Fatalf("halted r2 applied something: %s", got)
				}
				if tc.snapshot {
					if metas, _ := c.snaps[2].List(); len(metas) == 0 {
						t.Fatal("r2 received no snapshot")
					}
				}
				// The two others go on without it.
				c.fill(l, 5, "after")
				s := c.agree(0, 1)
				st, err := fsm.Decode(s)
				if err != nil {
					t.Fatal(err)
				}
				if st.Run == nil || st.Dedup["after-4"].Code != "" || *st.Release != rel {
					t.Fatalf("the cluster lost the run: run %v, release %+v", st.Run != nil, st.Release)
				}
			})
		})
	}
}

// TestWholeRunUpgrade: a cluster of three runs on this release's rules (its state snapshotted
// on every replica), stops, and two replicas restart on the next rules version: replaying the
// old leader's record, from the log and from the snapshot, stops neither; the new leader
// records its release and the run goes on. The third replica, left on the old release, then
// starts: it replays the old records, stops at the new leader's with the exact line, having
// applied everything before it and nothing after; started again on the old release it refuses
// to start (a newer release led its log); started on the new one it catches up.
func TestWholeRunUpgrade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newInmemCluster(t, 3)
		defer c.shutdown()
		l := c.leader()
		c.propose(l, fsm.Command{Kind: fsm.KindSubmit, Submit: &fsm.Submit{Run: testRun()}})
		c.fill(l, 20, "old")
		before := c.converge()
		oldRel := c.release(l)
		for i := range 3 {
			if err := c.reps[i].Raft().Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
		c.fill(l, 3, "tail") // past the snapshots: replayed from the log
		before = c.converge()
		c.shutdown()

		next := fsm.RulesVersion + 1
		c.rules[0], c.rules[1] = next, next
		c.start(0, false)
		c.start(1, false)
		l = c.leader(0, 1)
		c.fill(l, 2, "new")
		for _, i := range []int{0, 1} {
			select {
			case <-c.reps[i].Halted():
				t.Fatalf("r%d halted after the whole-run upgrade: %v", i, c.reps[i].HaltError())
			default:
			}
		}
		after := c.agree(0, 1)
		newRel := c.release(l)
		if newRel.Rules != next || newRel.Version != c.version(l) || newRel.Term <= oldRel.Term {
			t.Fatalf("new leader's record %+v after the old %+v", newRel, oldRel)
		}
		st, _ := fsm.Decode(after)
		if st.Run == nil || st.Dedup["old-19"].Code != "" || st.Dedup["tail-2"].Code != "" || st.Dedup["new-1"].Code != "" {
			t.Fatal("the upgraded cluster lost entries of the run")
		}

		// The replica left behind stops at the new leader's record.
		c.start(2, false)
		m := c.waitHalted(2)
		if got, want := m.Error(), stoppedLine("r2", fsm.RulesVersion, newRel.Term, next); got != want {
			t.Fatalf("halt line\n got %s\nwant %s", got, want)
		}
		if got := c.state(2); !bytes.Equal(got, before) {
			t.Fatalf("r2 stopped at\n%s\nwant the state before the new leader's record\n%s", got, before)
		}

		// Started again on the old release: refused, whatever the leader's term now.
		c.stop(2)
		_, tr := raft.NewInmemTransport("r2")
		_, err := NewReplica(ReplicaConfig{ID: "r2", Peers: c.peers, Raft: FastRaftConfig("r2"), LogStore: c.stores[2],
			StableStore: c.stores[2], Snapshots: c.snaps[2], Transport: tr, Version: c.version(2)})
		tr.Close()
		want := fmt.Sprintf("coordinator: replica r2 (ddpm v-rules%d, state machine rules %d) will not start: its raft log was led "+
			"in term %d by ddpm v-rules%d with newer rules %d, which this release may apply differently; run every coordinator "+
			"and trainer of a run on one release: stop the whole run, then start it all on the new release (README, \"Upgrading `ddpm`\")",
			fsm.RulesVersion, fsm.RulesVersion, newRel.Term, next, next)
		var mm *ReleaseMismatchError
		if !errors.As(err, &mm) || !mm.OnDisk || err.Error() != want {
			t.Fatalf("restart on the old release: %v\nwant %s", err, want)
		}

		// Upgraded, it catches up.
		c.rules[2] = next
		c.start(2, false)
		c.fill(l, 1, "last")
		c.agree(0, 1, 2)
	})
}

// TestProcessOfOtherRulesExits: real `ddpm coordinator` processes: two replicas run the cluster;
// a third, claiming the next rules version (the hidden --rules-version), stops on the leader's
// release record and exits 2 with the exact line; the two others keep serving the run; the
// third, started again on this release's rules, serves it.
func TestProcessOfOtherRulesExits(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	a, _, ra, _ := runConfigs(t, dir)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	ver := strings.TrimPrefix(strings.TrimSpace(string(out)), "ddpm ")
	addrs := freeAddrs(t, 6)
	ids := []string{"c0", "c1", "c2"}
	var peers []string
	for i, id := range ids {
		peers = append(peers, fmt.Sprintf("%s=%s=%s", id, addrs[2*i], addrs[2*i+1]))
	}
	args := func(i int, extra ...string) []string {
		return append([]string{"coordinator", "--insecure", "--id", ids[i], "--raft-addr", addrs[2*i], "--grpc-addr", addrs[2*i+1],
			"--peers", strings.Join(peers, ","), "--data-dir", filepath.Join(dir, ids[i]), "--bootstrap", "--config", a}, extra...)
	}
	for i := range 2 {
		startProc(t, bin, filepath.Join(dir, ids[i]+".log"), args(i)...)
	}
	waitLogMsg(t, filepath.Join(dir, "c0.log"), "run config in force", 20*time.Second)
	c, err := Dial([]string{addrs[1], addrs[3]}, insecureBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := waitState(t, ctx, c, func(s *fsm.State) bool { return s.Release != nil && s.Run != nil })
	rel := *s.Release

	got := runRefused(t, bin, args(2, fmt.Sprintf("--rules-version=%d", fsm.RulesVersion+1))...)
	want := fmt.Sprintf("ddpm: coordinator: replica c2 (ddpm %s, state machine rules %d) stopped: the leader of raft term %d runs "+
		"ddpm %s with state machine rules %d, and replicas of two rules versions may apply one log differently; "+
		"run every coordinator and trainer of a run on one release: stop the whole run, then start it all on the new release "+
		"(README, \"Upgrading `ddpm`\")", ver, fsm.RulesVersion+1, rel.Term, ver, fsm.RulesVersion)
	if got != want {
		t.Errorf("c2's last line\n%s\nwant\n%s", got, want)
	}
	if s, err := c.State(ctx); err != nil || s.ConfigHash != ra.Hash() || *s.Release != rel {
		t.Fatalf("the cluster after c2 stopped: %v (err %v)", s, err)
	}

	c2 := startProc(t, bin, filepath.Join(dir, "c2.log"), args(2)...)
	waitLogMsg(t, c2.log, "run config in force", 20*time.Second)
	stopProc(t, c2)
}
