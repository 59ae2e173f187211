package localrun

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PortHolder is what holds a loopback TCP port that a resumed run cannot bind, as Linux lists it
// in /proc/net/tcp and /proc/net/tcp6 (FindPortHolder).
type PortHolder struct {
	// Listening: a listening socket (it stays until its process closes it); otherwise the port
	// is the local end of a connection.
	Listening bool
	// TimeWait: a closed connection in TIME_WAIT, which no process holds; it ends by itself after
	// at most 60 s, Remaining from now (as the kernel's timer says).
	TimeWait  bool
	Remaining time.Duration
	// Remote is the other end of a connection ("" for a listening socket).
	Remote string
	// UID owns the socket (-1 unknown); PID is a process with it open (0 when none could be
	// found: another user's process whose /proc/PID/fd this user may not read, or no /proc).
	UID int
	PID int
	// Command is PID's command line, its words joined by spaces (white space inside a word
	// too: one line) and cut at 80 characters.
	Command string
}

// procRoot is where FindPortHolder reads the kernel's tables (tests point it elsewhere).
var procRoot = "/proc"

// FindPortHolder looks up what holds TCP port p on an address whose binding conflicts with
// 127.0.0.1:p (127.0.0.1, 0.0.0.0, ::, or their IPv4-mapped IPv6 forms), from /proc/net/tcp and
// /proc/net/tcp6, and the process holding the socket from the /proc/PID/fd links
// ("socket:[INODE]"). A listening socket is preferred to a connection, and a connection a
// process holds to one in TIME_WAIT. ok is false when no such socket is listed (no /proc, or the
// port came free meanwhile).
func FindPortHolder(p int) (h PortHolder, ok bool) {
	best, bestRank := PortHolder{}, -1
	var bestInode string
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(procRoot, "net", table))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			e, inode, ok := parseTCPLine(sc.Text(), p)
			if !ok {
				continue
			}
			rank := 0
			switch {
			case e.Listening:
				rank = 3
			case !e.TimeWait && inode != "0":
				rank = 2
			case e.TimeWait:
				rank = 1
			}
			if rank > bestRank {
				best, bestRank, bestInode = e, rank, inode
			}
		}
		f.Close()
	}
	if bestRank < 0 {
		return PortHolder{}, false
	}
	if !best.TimeWait && bestInode != "0" {
		best.PID = socketPID(bestInode)
		if best.PID > 0 {
			best.Command = commandOf(best.PID)
		}
	}
	return best, true
}

// parseTCPLine reads one entry of /proc/net/tcp{,6}:
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//	0: 0100007F:9C40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 1000 0 123456 ...
//
// ok is true for a socket on port p whose local address conflicts with 127.0.0.1:p. The
// addresses are hex of the address's bytes as the kernel stores them, in 32-bit words printed in
// host order (little-endian here); the port is hex in host order; st 0A is LISTEN, 06 TIME_WAIT,
// whose tm->when is the time left in clock ticks (USER_HZ, 100 per second).
func parseTCPLine(line string, p int) (h PortHolder, inode string, ok bool) {
	f := strings.Fields(line)
	if len(f) < 10 {
		return h, "", false
	}
	addr, port, found := strings.Cut(f[1], ":")
	if !found {
		return h, "", false
	}
	if n, err := strconv.ParseUint(port, 16, 16); err != nil || int(n) != p {
		return h, "", false
	}
	ip := procIP(addr)
	if ip == nil || !(ip.IsUnspecified() || ip.Equal(net.IPv4(127, 0, 0, 1))) {
		return h, "", false
	}
	h.UID = -1
	if uid, err := strconv.Atoi(f[7]); err == nil {
		h.UID = uid
	}
	switch f[3] {
	case "0A":
		h.Listening = true
	case "06":
		h.TimeWait = true
		if _, when, found := strings.Cut(f[5], ":"); found {
			if ticks, err := strconv.ParseUint(when, 16, 64); err == nil {
				h.Remaining = time.Duration(ticks) * 10 * time.Millisecond
			}
		}
	}
	if !h.Listening {
		ra, rp, _ := strings.Cut(f[2], ":")
		if rip := procIP(ra); rip != nil {
			if n, err := strconv.ParseUint(rp, 16, 16); err == nil {
				h.Remote = net.JoinHostPort(rip.String(), strconv.Itoa(int(n)))
			}
		}
	}
	if h.TimeWait {
		h.UID = -1 // TIME_WAIT entries list uid 0: no one owns them
	}
	return h, f[9], true
}

// procIP decodes an address of /proc/net/tcp{,6}: 8 or 32 hex digits, each 32-bit word in
// little-endian byte order.
func procIP(s string) net.IP {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 4 && len(b) != 16 {
		return nil
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}

// socketPID finds a process with the socket of this inode open, by the links in /proc/PID/fd;
// 0 when none can be seen (another user's process, to a user without the right to look).
func socketPID(inode string) int {
	want := "socket:[" + inode + "]"
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return 0
	}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(procRoot, d.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && link == want {
				return pid
			}
		}
	}
	return 0
}

// commandOf is pid's command line, its words joined by single spaces (a word's own newlines and
// tabs become spaces too), cut at 80 characters ("" when it cannot be read).
func commandOf(pid int) string {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return ""
	}
	// Words joined by one space, a word's own newlines and tabs too: the holder's line is one.
	s := strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\x00", " ")), " ")
	if r := []rune(s); len(r) > 80 {
		s = string(r[:77]) + "..."
	}
	return s
}

// HeldBy is Describe for a holder that is not listening, as a line saying a port is held puts
// it: "a connection of pid N (COMMAND) to REMOTE", or Describe's TIME_WAIT text.
func (h PortHolder) HeldBy() string {
	if h.TimeWait || h.Listening {
		return h.Describe()
	}
	s := "a connection of " + h.Describe()
	if h.Remote != "" {
		s += " to " + h.Remote
	}
	return s
}

// Describe names what holds the port: "pid 4242 (python3 -m http.server 40001)", "a closed
// connection in TIME_WAIT (another 41 s)", "a process of user bob (uid 1001) that this user
// cannot look into".
func (h PortHolder) Describe() string {
	if h.TimeWait {
		return fmt.Sprintf("a closed connection in TIME_WAIT (another %d s)", int((h.Remaining+time.Second-1)/time.Second))
	}
	who := ""
	switch {
	case h.PID > 0 && h.Command != "":
		who = fmt.Sprintf("pid %d (%s)", h.PID, h.Command)
	case h.PID > 0:
		who = fmt.Sprintf("pid %d", h.PID)
	case h.UID >= 0:
		name := strconv.Itoa(h.UID)
		if u, err := user.LookupId(name); err == nil {
			name = u.Username
		}
		who = fmt.Sprintf("a process of user %s (uid %d) that this user cannot look into", name, h.UID)
	default:
		who = "a process this user cannot look into"
	}
	return who
}
