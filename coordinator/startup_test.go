package coordinator

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ddpm/internal/tlsauth"
)

func insecureBundle(t *testing.T) *tlsauth.Bundle {
	t.Helper()
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// TestStartNodeFailsCleanly: a coordinator that cannot start (its gRPC port taken, an
// unreachable raft address, a raft.db that is not a database) returns one error naming the
// cause, without a panic, and leaves its other ports free.
func TestStartNodeFailsCleanly(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addrs := freeAddrs(t, 2)
	cases := []struct {
		name      string
		raft, rpc string
		want      string
	}{
		{"grpc port taken", addrs[0], taken.Addr().String(), "cannot listen on --grpc-addr " + taken.Addr().String() + ": the port is in use by pid "},
		{"raft port taken", taken.Addr().String(), addrs[1], "cannot listen on --raft-addr " + taken.Addr().String() + ": the port is in use by pid "},
		{"unspecified raft address", "0.0.0.0:" + strings.Split(addrs[0], ":")[1], addrs[1], "must name an IP other peers can reach"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Peer{ID: "n0", RaftAddr: c.raft, GRPCAddr: c.rpc}
			node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
				DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
			if err == nil {
				node.Close()
				t.Fatal("StartNode succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name %q", err, c.want)
			}
		})
	}
	// The failed starts released what they had opened: the same ports now serve a node.
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: t.TempDir(), Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
	if err != nil {
		t.Fatalf("start after failed starts: %v", err)
	}
	node.Close()
}

// TestStartNodeDataDirInUse: a second coordinator on a data dir that a running one holds fails
// within about a second, naming raft.db as in use and the process holding it, instead of blocking on the file lock.
func TestStartNodeDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	addrs := freeAddrs(t, 4)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	first, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	q := Peer{ID: "n0", RaftAddr: addrs[2], GRPCAddr: addrs[3]}
	t0 := time.Now()
	second, err := StartNode(NodeConfig{ID: q.ID, RaftAddr: q.RaftAddr, GRPCAddr: q.GRPCAddr, Peers: []Peer{q},
		DataDir: dir, Version: "v1", Security: insecureBundle(t)})
	if err == nil {
		second.Close()
		t.Fatal("a second coordinator opened a data dir in use")
	}
	// The first coordinator runs in this process, which /proc/locks names.
	want := filepath.Join(dir, "raft.db") + " is in use by process " + strconv.Itoa(os.Getpid())
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("took %v to fail", d)
	}
}
