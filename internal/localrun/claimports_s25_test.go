package localrun

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// procLineOf returns the line of the real /proc/net/tcp for this process's listening socket on
// 127.0.0.1:port.
func procLineOf(t *testing.T, port int) string {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if h, _, ok := parseTCPLine(sc.Text(), port); ok && h.Listening {
			return sc.Text()
		}
	}
	t.Fatalf("no listening socket on port %d in /proc/net/tcp", port)
	return ""
}

// withField returns line with its whitespace-separated field i (0-based) set to v.
func withField(line string, i int, v string) string {
	f := strings.Fields(line)
	f[i] = v
	return strings.Join(f, " ")
}

// TestCLIS25ClaimPortsOtherUsersListener: a recorded port that /proc/net/tcp lists as listening
// and owned by another user, whose process this user cannot look into, is refused at once as
// ErrPortHeld, naming the port, the user and the uid; a connection of such a user is still
// waited for. The tables are a real /proc/net/tcp line of a real listening socket (this test's,
// which keeps the port unbindable) with its uid field changed, in a copy of /proc this user sees
// no process of: faking another user for real takes root and a setuid child, which
// TestCLIS25ResumeOtherUsersListener does when it runs as root. The listener was waited for
// (65 s in ddpm local --resume), then named as "still held".
func TestCLIS25ClaimPortsOtherUsersListener(t *testing.T) {
	out := t.TempDir()
	m, err := NewManifest("h", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := m.TrainerPorts[0].Listen
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	other := 65534
	if os.Geteuid() == other {
		other = 0
	}
	name := strconv.Itoa(other)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	real := procLineOf(t, p)
	fake := t.TempDir()
	if err := os.Mkdir(filepath.Join(fake, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	const header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	writeTables := func(line string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(fake, "net", "tcp"), []byte(header+line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(fake, "net", "tcp6"), []byte(header), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := procRoot
	procRoot = fake
	defer func() { procRoot = old }()

	writeTables(withField(real, 7, strconv.Itoa(other)))
	var said []string
	t0 := time.Now()
	err = m.ClaimPorts(out, 5*time.Second, func(s string) { said = append(said, s) })
	want := fmt.Sprintf("trainer-0's port 127.0.0.1:%d (recorded in %s) is listened on by a process of user %s (uid %d) that this user cannot look into, which is not this run's (its processes run as this user, uid %d): have it stopped, then resume again",
		p, filepath.Join(out, ManifestFile), name, other, os.Geteuid())
	if !errors.Is(err, ErrPortHeld) || err.Error() != want || len(said) != 0 {
		t.Fatalf("ClaimPorts = %v (said %q)\nwant %q, nothing said", err, said, want)
	}
	if took := time.Since(t0); took > 3*time.Second {
		t.Errorf("ClaimPorts took %v to refuse the listener", took)
	}

	// The same socket listed as an established connection of that user (remote 127.0.0.1:80) is
	// waited for, as before.
	conn := withField(withField(real, 3, "01"), 2, "0100007F:0050")
	writeTables(withField(conn, 7, strconv.Itoa(other)))
	said = nil
	err = m.ClaimPorts(out, time.Second, func(s string) { said = append(said, s) })
	who := fmt.Sprintf("a process of user %s (uid %d) that this user cannot look into", name, other)
	if !errors.Is(err, ErrPortHeld) || !strings.Contains(err.Error(), "is still held by "+who+" after 1s") || len(said) != 1 {
		t.Fatalf("ClaimPorts of another user's connection = %v (said %q); want it waited for, said once, then named", err, said)
	}
}
