package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// ErrNoNetns: network namespaces cannot be made here (not root, or no iproute2).
var ErrNoNetns = errors.New("chaos: network namespaces unavailable")

// netns is a bridge in the root namespace with one veth pair per trainer namespace:
//
//	root ns:  bridge <tag>br 10.213.<n>.1/24  (coordinators' gRPC listens here)
//	          <tag>v<i>  (host end, enslaved to the bridge; LinkDown sets it down)
//	ns <tag>t<i>: eth0 10.213.<n>.<10+i>/24, lo
//
// so every ring message between trainers crosses two real veth interfaces and the bridge.
type netns struct {
	tag      string // short unique prefix: interface names are at most 15 bytes
	subnet   string // "10.213.N"
	hostAddr string
	trainers int
}

// NetnsAvailable says why namespaces cannot be used, or nil.
func NetnsAvailable() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (uid %d)", ErrNoNetns, os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: %v (apt-get install iproute2)", ErrNoNetns, err)
	}
	return nil
}

func newNetns(trainers int) (*netns, error) {
	if err := NetnsAvailable(); err != nil {
		return nil, err
	}
	id := os.Getpid() % 250
	n := &netns{tag: "dc" + strconv.Itoa(os.Getpid()%100000), subnet: "10.213." + strconv.Itoa(id+1), trainers: trainers}
	n.hostAddr = n.subnet + ".1"
	br := n.tag + "br"
	cmds := [][]string{
		{"link", "add", br, "type", "bridge"},
		{"addr", "add", n.hostAddr + "/24", "dev", br},
		{"link", "set", br, "up"},
	}
	for i := range trainers {
		ns, host := n.ns(i), n.veth(i)
		cmds = append(cmds,
			[]string{"netns", "add", ns},
			[]string{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"link", "set", host, "master", br, "up"},
			[]string{"-n", ns, "addr", "add", n.trainerAddr(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, c := range cmds {
		if err := ip(c...); err != nil {
			n.close()
			return nil, fmt.Errorf("%w: %v", ErrNoNetns, err)
		}
	}
	return n, nil
}

func (n *netns) ns(i int) string          { return n.tag + "t" + strconv.Itoa(i) }
func (n *netns) veth(i int) string        { return n.tag + "v" + strconv.Itoa(i) }
func (n *netns) trainerAddr(i int) string { return n.subnet + "." + strconv.Itoa(10+i) }

// link sets trainer i's link (the host end of its veth pair) up or down.
func (n *netns) link(i int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return ip("link", "set", n.veth(i), state)
}

// close deletes the namespaces (their veth ends go with them) and the bridge.
func (n *netns) close() {
	for i := range n.trainers {
		_ = ip("netns", "del", n.ns(i))
		_ = ip("link", "del", n.veth(i))
	}
	_ = ip("link", "del", n.tag+"br")
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
