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
	var held, given []string
	for _, s := range servers {
		held = append(held, string(s.ID)+"="+string(s.Address))
	}
	for _, p := range peers {
		given = append(given, p.ID+"="+p.RaftAddr)
	}
	slices.Sort(held)
	slices.Sort(given)
	if slices.Equal(held, given) {
		return nil
	}
	// A cluster of this replica alone may move to other ports: nobody else dials the address
	// its configuration holds, and raft elects it by id.
	if len(servers) == 1 && len(peers) == 1 && string(servers[0].ID) == peers[0].ID {
		return nil
	}
	return fmt.Errorf("coordinator: %w: --data-dir %s holds replicas %s (id=raft address), --peers lists %s; "+
		"give every replica the --peers the cluster began with, or, if this --peers is that list and the data dir "+
		"was bootstrapped with another, move %s aside and start this replica again (it catches up from the others)",
		ErrPeersMismatch, dataDir, strings.Join(held, ","), strings.Join(given, ","), dataDir)
}
