package localrun

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

func holdPort(t *testing.T, p int) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestClaimPorts: a resumed run's recorded port that another process took while the run was
// stopped (in make test, an ephemeral port of some other test's connection: the resume failed
// with "port is in use") is replaced when it is a trainer's and waited for when it is a
// coordinator's, which the replicas' raft configuration names.
func TestClaimPorts(t *testing.T) {
	m, err := NewManifest("h", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	old := m.TrainerPorts[1].Listen
	held := holdPort(t, old)
	defer held.Close()
	var said []string
	say := func(s string) { said = append(said, s) }
	moved, err := m.ClaimPorts(time.Second, say)
	if err != nil {
		t.Fatal(err)
	}
	fresh := m.TrainerPorts[1].Listen
	if want := fmt.Sprintf("trainer-1's port 127.0.0.1:%d is in use; it takes 127.0.0.1:%d", old, fresh); len(moved) != 1 || moved[0] != want {
		t.Fatalf("moved %q, want [%q]", moved, want)
	}
	c := m.CoordinatorPorts[0]
	for _, p := range []int{c.Raft, c.GRPC, c.HTTP, m.TrainerPorts[0].Listen, m.TrainerPorts[0].HTTP, m.TrainerPorts[1].HTTP} {
		if p == fresh || p == old {
			t.Fatalf("trainer-1 took port %d, another of the run's (or the held one)", p)
		}
	}
	if len(said) != 0 {
		t.Fatalf("said %q for a trainer port", said)
	}

	// A coordinator's port still held after the wait: ErrPortBusy naming it, said once.
	hc := holdPort(t, c.GRPC)
	moved, err = m.ClaimPorts(600*time.Millisecond, say)
	if want := fmt.Sprintf("port is in use: 127.0.0.1:%d, coordinator-0's (recorded in local.json; stop what holds it)", c.GRPC); !errors.Is(err, ErrPortBusy) || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if want := fmt.Sprintf("coordinator-0's port 127.0.0.1:%d (recorded in local.json) is in use; waiting up to 1s for it (a closed connection holds its port for 60 s)", c.GRPC); len(said) != 1 || said[0] != want {
		t.Fatalf("said %q, want [%q]", said, want)
	}
	if len(moved) != 0 || m.CoordinatorPorts[0] != c {
		t.Fatalf("coordinator ports changed: %v, moved %q", m.CoordinatorPorts[0], moved)
	}

	// Released within the wait: claimed.
	go func() { time.Sleep(300 * time.Millisecond); hc.Close() }()
	if _, err := m.ClaimPorts(10*time.Second, say); err != nil {
		t.Fatal(err)
	}
}
