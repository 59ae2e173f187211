package coordinator

import (
	"os"
	"path/filepath"
	"testing"
)

// TestStartNodeOpenErrorNamesFileOnce: a raft.db the operating system will not open is named
// once ("coordinator: open PATH: no such file or directory"), not "open PATH: open PATH: ...".
func TestStartNodeOpenErrorNamesFileOnce(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "raft.db")
	// A link into a directory that does not exist: nothing to check, and the create fails.
	if err := os.Symlink(filepath.Join(dir, "gone", "raft.db"), db); err != nil {
		t.Fatal(err)
	}
	addrs := freeAddrs(t, 2)
	p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
		DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
	if err == nil {
		node.Close()
		t.Fatal("StartNode succeeded")
	}
	if want := "coordinator: open " + db + ": no such file or directory"; err.Error() != want {
		t.Fatalf("error:\n%s\nwant:\n%s", err, want)
	}
}
