package main

import (
	"context"
	"net"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/internal/tlsauth"
)

// TestStatusLeaderUnreachable: a follower's answer that names a leader the command cannot reach
// (one just gone, the follower still naming it; a cluster name that does not resolve here, as
// through kubectl port-forward) is shown as it is within a fraction of a second, without a lag
// note. Before, the leader check waited 3 s on gRPC's retries.
func TestStatusLeaderUnreachable(t *testing.T) {
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, addr := range []string{refused, "no-such-host.invalid:7001"} {
		t.Run(addr, func(t *testing.T) {
			resp := &api.StatusResponse{ReplicaId: "c0", LeaderId: "c1", LeaderGrpcAddress: addr, AppliedIndex: 7}
			start := time.Now()
			got, _, note := leaderState(context.Background(), resp, nil, "", sec, 10*time.Second)
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %v, want under 1s", took)
			}
			if got != resp || note != "" {
				t.Errorf("got replica %s, note %q; want the follower's own answer and no note", got.ReplicaId, note)
			}
		})
	}
}
