package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"

	"ddpm/api"
	"ddpm/internal/tlsauth"
)

// DefaultPeersWait is NodeConfig.PeersWait's default (`ddpm coordinator --peers-wait`): how long
// a replica starting on a new --data-dir asks the other replicas of its --peers which raft
// configuration they hold (checkRunningPeers). Replicas not up yet refuse the connection at
// once; the wait is spent only on one that accepts and does not answer.
const DefaultPeersWait = 3 * time.Second

// checkRunningPeers asks, before a replica whose --data-dir holds no raft.db yet writes anything
// there (its --bootstrap configuration, or the leader's entries), every other replica of its
// --peers at its gRPC address for the raft configuration it holds (Status, raft_servers), for at
// most cfg.PeersWait. A replica that holds one other than --peers (other ids, or other raft
// addresses) means the replicas this one names already run a cluster whose members differ from
// its --peers: started, it bootstrapped a configuration of its own (or ran with a list that
// forwards to the wrong replicas) and was caught only on writes and at its next restart. The
// error matches ErrPeersMismatch and names both lists. Replicas that do not answer (not started,
// a first start of every replica), hold no configuration yet, or run a release whose Status has
// no raft_servers are passed over: the start goes on as before. Nil with a data dir that holds
// raft.db (checkHeldPeers compares its configuration) or a --peers of this replica alone.
func checkRunningPeers(cfg NodeConfig) error {
	if len(cfg.Peers) < 2 {
		return nil
	}
	if _, err := os.Lstat(filepath.Join(cfg.DataDir, "raft.db")); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	wait := cfg.PeersWait
	if wait <= 0 {
		wait = DefaultPeersWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	type answer struct {
		peer    Peer
		servers []string
	}
	answers := make(chan answer, len(cfg.Peers))
	asked := 0
	for _, p := range cfg.Peers {
		if p.ID == cfg.ID {
			continue
		}
		asked++
		go func() { answers <- answer{p, heldServers(ctx, p.GRPCAddr, cfg.Security)} }()
	}
	given := peerServers(cfg.Peers)
	for range asked {
		a := <-answers
		if len(a.servers) == 0 || samePeers(a.servers, given, cfg.Peers) {
			continue
		}
		return fmt.Errorf("coordinator: %w: replica %s (gRPC %s) runs a cluster of replicas %s (id=raft address), "+
			"--peers lists %s; give this replica the --peers that cluster began with, or, if this --peers is the one "+
			"meant, stop the replicas running the other cluster first (--data-dir %s was left as it was)",
			ErrPeersMismatch, a.peer.ID, a.peer.GRPCAddr, strings.Join(a.servers, ","), strings.Join(given, ","), cfg.DataDir)
	}
	return nil
}

// heldServers returns the raft configuration the replica at gRPC address addr holds (its Status
// raft_servers), nil when it does not answer by ctx's end or answers without one.
func heldServers(ctx context.Context, addr string, sec *tlsauth.Bundle) []string {
	cc, err := grpc.NewClient(addr, append(callOptions(), sec.DialOptions()...)...)
	if err != nil {
		return nil
	}
	defer cc.Close()
	resp, err := api.NewCoordinatorClient(cc).Status(ctx, &api.StatusRequest{})
	if err != nil {
		return nil
	}
	return resp.RaftServers
}
