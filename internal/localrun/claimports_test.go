package localrun

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClaimPorts: a resumed run's recorded port that another process holds (here this test) is
// refused at once as ErrPortHeld, naming that process; the ports stay as recorded, and once it
// lets go they are claimed. (Ports waited for: TestClaimPortsWaitsForOwnProcess,
// TestClaimPortsTimeWait.)
func TestClaimPorts(t *testing.T) {
	out := t.TempDir()
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
	err = m.ClaimPorts(out, 10*time.Second, say)
	want := fmt.Sprintf("trainer-1's port 127.0.0.1:%d (recorded in %s) is held by pid %d (", p, filepath.Join(out, ManifestFile), os.Getpid())
	if !errors.Is(err, ErrPortHeld) || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "), which is not this run's: stop it, then resume again") {
		t.Fatalf("got %v, want %q...", err, want)
	}
	held.Close()
	if err := m.ClaimPorts(out, 10*time.Second, say); err != nil {
		t.Fatal(err)
	}
	if len(said) != 0 || fmt.Sprint(m) != before {
		t.Fatalf("said %q; manifest %v, was %v", said, m, before)
	}
}
