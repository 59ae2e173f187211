package coordinator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// checkHeldPeers compares the static peer list a replica was started with (cfg.Peers, its
// --peers) with the raft configuration its data dir holds (the replicas and raft addresses the
// cluster was bootstrapped with; raft takes that one and ignores --peers once it has state).
// They must name the same replica ids at the same raft addresses (a cluster of one replica may
// change its address): the peer list also gives the
// other replicas' gRPC addresses, which forwarding to the leader and the trainers' address lists
// read, so a list that leaves a replica out lets this one run and vote while every write it
// forwards to that replica, leading, fails with "no leader known" (found running a cluster by
// hand). Nil when the data dir holds no configuration yet (a fresh replica that waits for the
// leader). The error matches ErrPeersMismatch and names the data dir and both lists.
func checkHeldPeers(r *raft.Raft, peers []Peer, dataDir string) error {
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("coordinator: read the raft configuration in %s: %w", dataDir, err)
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return nil
	}
	held, given := raftServers(f.Configuration()), peerServers(peers)
	if samePeers(held, given, peers) {
		return nil
	}
	return fmt.Errorf("coordinator: %w: --data-dir %s holds replicas %s (id=raft address), --peers lists %s; "+
		"give every replica the --peers the cluster began with, or, if this --peers is that list and the data dir "+
		"was bootstrapped with another, move %s aside and start this replica again (it catches up from the others)",
		ErrPeersMismatch, dataDir, strings.Join(held, ","), strings.Join(given, ","), dataDir)
}

// raftServers lists the servers of a raft configuration as "id=raft address", sorted (empty
// for none).
func raftServers(c raft.Configuration) []string {
	var l []string
	for _, s := range c.Servers {
		l = append(l, string(s.ID)+"="+string(s.Address))
	}
	slices.Sort(l)
	return l
}

// peerServers lists --peers as raftServers lists a configuration: "id=raft address", sorted.
func peerServers(peers []Peer) []string {
	var l []string
	for _, p := range peers {
		l = append(l, p.ID+"="+p.RaftAddr)
	}
	slices.Sort(l)
	return l
}

// samePeers reports whether held (raftServers of a configuration) and given (peerServers of
// peers) name the same replicas at the same raft addresses. A cluster of one replica may move
// to other ports: nobody else dials the address its configuration holds, and raft elects it by
// id.
func samePeers(held, given []string, peers []Peer) bool {
	if slices.Equal(held, given) {
		return true
	}
	if len(held) != 1 || len(peers) != 1 {
		return false
	}
	id, _, _ := strings.Cut(held[0], "=")
	return id == peers[0].ID
}
