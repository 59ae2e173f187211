package localrun

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestClaimPorts: a resumed run's recorded port that another process took while the run was
// stopped (in make test under load, an ephemeral port of some other test's connection: the
// resume failed at once with "port is in use") is waited for, said once, and named with its
// owner when it stays taken; the ports stay as recorded.
func TestClaimPorts(t *testing.T) {
	m, err := NewManifest("h", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	before := fmt.Sprint(m)
	p := m.TrainerPorts[1].Listen
	held, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	var said []string
	say := func(s string) { said = append(said, s) }
	err = m.ClaimPorts(600*time.Millisecond, say)
	if want := fmt.Sprintf("port is in use: 127.0.0.1:%d, trainer-1's (recorded in local.json; stop what holds it)", p); !errors.Is(err, ErrPortBusy) || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if want := fmt.Sprintf("trainer-1's port 127.0.0.1:%d (recorded in local.json) is in use; waiting up to 1s for it (a closed connection holds its port for 60 s)", p); len(said) != 1 || said[0] != want {
		t.Fatalf("said %q, want [%q]", said, want)
	}
	// Released within the wait: claimed, the ports as recorded.
	go func() { time.Sleep(300 * time.Millisecond); held.Close() }()
	if err := m.ClaimPorts(10*time.Second, say); err != nil {
		t.Fatal(err)
	}
	if len(said) != 2 || fmt.Sprint(m) != before {
		t.Fatalf("said %q; manifest %v, was %v", said, m, before)
	}
}
