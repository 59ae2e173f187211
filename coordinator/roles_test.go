package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestRoleCertificatesCluster runs three real coordinator nodes (raft + gRPC) on coordinator
// certificates issued from one CA (`ddpm certs issue --role coordinator`): they elect a leader
// and take the run. A trainer certificate joins through a follower (which forwards the write to
// the leader under its own coordinator certificate) but its RollbackRun is refused with
// PERMISSION_DENIED naming its role and the method; an operator certificate reads the status
// and its RollbackRun, forwarded the same way, reaches the state machine (refused there only for
// want of a committed checkpoint). Without role checks the trainer's rollback reached the state
// machine too.
func TestRoleCertificatesCluster(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	coordCerts := tlsauthtest.Issue(t, certs, tlsauth.RoleCoordinator)
	addrs := freeAddrs(t, 6)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{ID: []string{"c0", "c1", "c2"}[i], RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
	}
	run := testRun()
	var nodes []*Node
	log := &tlsauthtest.Log{}
	for i, p := range peers {
		cfg := NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers, DataDir: t.TempDir(),
			Bootstrap: true, Version: "v1", Security: tlsauthtest.Load(t, coordCerts, log)}
		if i == 0 {
			cfg.Run = &run
		}
		n, err := StartNode(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		nodes = append(nodes, n)
	}

	dial := func(role tlsauth.Role, addr string) *Client {
		c, err := Dial([]string{addr}, tlsauthtest.Load(t, tlsauthtest.Issue(t, certs, role), nil), WithAttemptTimeout(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// A follower that knows its leader, once the run is in force.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var follower string
	for follower == "" {
		for _, n := range nodes {
			if !n.Replica.IsLeader() && n.Replica.Leader().ID != "" {
				follower = n.cfg.GRPCAddr
			}
		}
		if ctx.Err() != nil {
			t.Fatal("no follower with a leader within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	op := dial(tlsauth.RoleOperator, follower)
	for {
		st, err := op.State(ctx)
		if err != nil {
			t.Fatalf("operator status: %v", err)
		}
		if st.ConfigHash != "" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	tr := dial(tlsauth.RoleTrainer, follower)
	j, err := tr.Join(ctx, JoinRequest{ID: "t0", Address: "127.0.0.1:7100", Version: "v1"})
	if err != nil || j.Incarnation == 0 {
		t.Fatalf("trainer join through a follower: %+v, %v", j, err)
	}
	_, err = tr.RollbackRun(ctx, 0)
	const denied = "role trainer may not call /ddpm.coordinator.v1.Coordinator/RollbackRun (roles allowed: coordinator, operator)"
	if !errors.Is(err, ErrPermissionDenied) || err.Error() != "coordinator: permission denied: "+denied {
		t.Fatalf("trainer rollback: %v, want ErrPermissionDenied %q", err, denied)
	}
	log.Wait(t, "tlsauth: refused call", "Coordinator/RollbackRun", "cert_role=trainer")

	_, err = op.RollbackRun(ctx, 0)
	if !errors.Is(err, fsm.ErrBadRollback) {
		t.Fatalf("operator rollback: %v, want the state machine's refusal (%v)", err, fsm.ErrBadRollback)
	}
}

// TestClientRefusesNonCoordinatorServer: a real coordinator node that runs on an operator's
// certificate (StartNode given it directly; ddpm coordinator refuses such a directory at
// start-up) gets no call from a trainer's client: Status fails at once with ErrNotCoordinator
// naming the address and both roles, and the node sees no call. Listed before a real replica,
// it is passed over and the real one answers (it used to end the call).
func TestClientRefusesNonCoordinatorServer(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	node, log := startSecureNode(t, tlsauthtest.Issue(t, certs, tlsauth.RoleOperator))
	addr := node.cfg.GRPCAddr
	err := statusWith(t, addr, tlsauthtest.Load(t, tlsauthtest.Issue(t, certs, tlsauth.RoleTrainer), nil))
	want := "coordinator: not a coordinator: refused the server at " + addr +
		": its certificate has role operator, and /ddpm.coordinator.v1.Coordinator/Status is served by role coordinator: " + GRPCPortHint
	if !errors.Is(err, ErrNotCoordinator) || err.Error() != want {
		t.Fatalf("status: %v\nwant %q", err, want)
	}
	if s := log.String(); s != "" {
		t.Errorf("the node saw a call:\n%s", s)
	}

	// Listed first, before a real replica of the cluster: passed over, the real one answers.
	real, _ := startSecureNode(t, certs)
	c, err := Dial([]string{addr, real.cfg.GRPCAddr}, tlsauthtest.Load(t, tlsauthtest.Issue(t, certs, tlsauth.RoleTrainer), nil), WithAttemptTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("status with the operator's address listed before a coordinator's: %v", err)
	}
	if s := log.String(); s != "" {
		t.Errorf("the node saw a call:\n%s", s)
	}
}
