package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/coordinator"
	"ddpm/internal/tlsauth"
)

// TestStatusFollowerLags: `ddpm status` answered by a follower whose raft.db stopped taking
// writes (three real replicas; the follower's descriptor on raft.db is replaced by a read-only
// one, as a disk gone read-only) says that it lags the leader, by how much, and shows the
// leader's state. Before: the follower's stale state with no note.
func TestStatusFollowerLags(t *testing.T) {
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	var peers []coordinator.Peer
	for i := range 3 {
		peers = append(peers, coordinator.Peer{ID: "c" + strconv.Itoa(i), RaftAddr: freeAddr(t), GRPCAddr: freeAddr(t)})
	}
	var nodes []*coordinator.Node
	for _, p := range peers {
		// The leader must lead throughout (the note names it and both applied indexes): with
		// the fast settings' 250 ms lease and 500 ms timeouts, a loaded machine that delayed the
		// healthy follower's answers or the heartbeats that long could move the leadership mid-test.
		rc := coordinator.FastRaftConfig(p.ID)
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
		node, err := coordinator.StartNode(coordinator.NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers,
			DataDir: filepath.Join(t.TempDir(), p.ID), Bootstrap: true, Version: "v1", Security: sec, Raft: rc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		nodes = append(nodes, node)
	}
	leader := -1
	for deadline := time.Now().Add(time.Minute); leader < 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		for i, n := range nodes {
			if n.Replica.IsLeader() {
				leader = i
			}
		}
	}
	f := (leader + 1) % 3
	dbPath := ""
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasSuffix(target, string(filepath.Separator)+peers[f].ID+string(filepath.Separator)+"raft.db") {
			dbPath = target
			fd, _ := strconv.Atoi(e.Name())
			ro, err := os.Open(target)
			if err != nil {
				t.Fatal(err)
			}
			if err := syscall.Dup3(int(ro.Fd()), fd, syscall.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			ro.Close()
		}
	}
	if dbPath == "" {
		t.Skip("raft.db's descriptor not found in /proc/self/fd")
	}
	for range 150 {
		if err := nodes[leader].Replica.Raft().Apply([]byte("entry"), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	lead, before := nodes[leader].Replica.AppliedIndex(), nodes[f].Replica.AppliedIndex()
	out, err := runDDPM(t, "status", "--coordinator", peers[f].GRPCAddr, "--insecure")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(out, "\n")
	want := "note: replica " + peers[f].ID + " lags its leader (applied index " + strconv.FormatUint(before, 10) + ", the leader's " +
		strconv.FormatUint(lead, 10) + ") and cannot store raft log entries (write " + dbPath + ": bad file descriptor; free space on its disk, see its log): the state below is the leader " + peers[leader].ID + "'s"
	if first != want {
		t.Fatalf("first line:\n%s\nwant\n%s\n(output:\n%s)", first, want, out)
	}
	// A replica as far behind whose writes succeed (one catching up after a restart: the
	// tester's c0 at applied index 0 for 10 s) is said to be catching up, no disk named.
	cli, err := coordinator.Dial([]string{peers[leader].GRPCAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	lr, err := cli.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	restarted := &api.StatusResponse{ReplicaId: peers[f].ID, LeaderId: peers[leader].ID, LeaderGrpcAddress: peers[leader].GRPCAddr}
	_, _, note := leaderState(context.Background(), restarted, nil, "", sec, 10*time.Second)
	if want := "note: replica " + peers[f].ID + " is catching up with its leader (applied index 0, the leader's " +
		strconv.FormatUint(lr.AppliedIndex, 10) + "; normal after a restart): the state below is the leader " + peers[leader].ID + "'s"; note != want {
		t.Fatalf("note of a replica catching up:\n%s\nwant\n%s", note, want)
	}
	if !strings.Contains(out, "replica  "+peers[leader].ID+" (leader "+peers[leader].ID+",") {
		t.Fatalf("the replica line is not the leader's:\n%s", out)
	}
	// The leader's own answer carries no note.
	out, err = runDDPM(t, "status", "--coordinator", peers[leader].GRPCAddr, "--insecure")
	if err != nil || strings.HasPrefix(out, "note:") {
		t.Fatalf("leader's status: %v\n%s", err, out)
	}
}
