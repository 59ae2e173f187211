package allreduce

import (
	"errors"
	"strings"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestOutsiderCannotJoinRing: rank 1 of a two-rank ring dials rank 0 with the cluster's
// certificates but another join secret, then (a fresh generation) with another CA's. Rank 0
// refuses the stream, no frame of the outsider is summed, both ranks fail with ErrPeerLost, and
// the outsider's error names the join-secret refusal (a TLS refusal only times out: gRPC keeps
// retrying the connection).
func TestOutsiderCannotJoinRing(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		certs      func(t testing.TB, own string) string
		// timeout is the outsider's deadline (rank 0 always waits 2 s): the refusal of a wrong
		// secret comes back in milliseconds, but a loaded machine (the whole suite at once on 2
		// cores) can take seconds over the TLS handshakes, so that case has room; a TLS refusal
		// only times out.
		timeout time.Duration
	}{
		{"wrong join secret", "wrong join secret", tlsauthtest.WrongSecret, 5 * time.Second},
		// The ring's stream waits for a connection, so a TLS refusal surfaces as the timeout.
		{"another CA", "no result for operation 1 within 2s", func(t testing.TB, _ string) string { return tlsauthtest.Dir(t) }, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One try: a ring of two real nodes, rank 1 the outsider. It returns the outsider's
			// error after checking what must hold on every try.
			try := func() error {
				nodes := startNodes(t, 2)
				peers := []string{nodes[0].addr, nodes[1].addr}
				r0, err := NewRing(nodes[0].ep, Config{Generation: 1, Rank: 0, Peers: peers, Timeout: 2 * time.Second,
					DialOptions: nodes[0].sec.DialOptions()})
				if err != nil {
					t.Fatal(err)
				}
				defer r0.Close()
				outsider := tlsauthtest.Load(t, tc.certs(t, nodes[0].certs), nil)
				r1, err := NewRing(nodes[1].ep, Config{Generation: 1, Rank: 1, Peers: peers, Timeout: tc.timeout,
					DialOptions: outsider.DialOptions()})
				if err != nil {
					t.Fatal(err)
				}
				defer r1.Close()
				bufs := [][]float32{{1, 2, 3}, {10, 20, 30}}
				errs := allReduce([]*Ring{r0, r1}, bufs)
				if errs[0] == nil || errs[1] == nil {
					t.Fatalf("an outsider's ring completed: %v", errs)
				}
				if !errors.Is(errs[0], ErrPeerLost) || !errors.Is(errs[1], ErrPeerLost) {
					t.Fatalf("rank 0: %v; outsider: %v; want ErrPeerLost on both", errs[0], errs[1])
				}
				if bufs[0][0] != 1 || bufs[0][1] != 2 || bufs[0][2] != 3 {
					t.Fatalf("rank 0's buffer changed to %v: an outsider's frame was summed", bufs[0])
				}
				return errs[1]
			}
			// The refusal can only be named once the outsider's TLS handshake has completed; with
			// the whole suite on 2 cores a handshake has been seen to miss its deadline, leaving
			// the outsider a plain timeout. A refusal that is never named fails every try.
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if err = try(); strings.Contains(err.Error(), tc.want) {
					return
				}
			}
			t.Errorf("outsider: %v; want its error to name %q", err, tc.want)
		})
	}
}
