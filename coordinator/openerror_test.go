package coordinator

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
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

// TestStartNodeFileTooLargeRemedy: under a file size limit of 64 KiB (prlimit --fsize=65536, a
// full disk alike) raft.db cannot be written; the error ends with the remedy, freeing space on
// --data-dir's disk (was the bare 'file too large'). Runs StartNode in a child process (this
// test binary), whose limit this one does not share.
func TestStartNodeFileTooLargeRemedy(t *testing.T) {
	if dir := os.Getenv("DDPM_TEST_FSIZE_DIR"); dir != "" {
		limit, _ := strconv.ParseUint(os.Getenv("DDPM_TEST_FSIZE"), 10, 64)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: limit}); err != nil {
			t.Fatal(err)
		}
		addrs := freeAddrs(t, 2)
		p := Peer{ID: "n0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
			DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
		if err == nil {
			node.Close()
			fmt.Println("ERR: none")
			return
		}
		fmt.Println("ERR: " + err.Error())
		return
	}
	// A raft.db past the limit, as a replica's after a while: its next write lies beyond it.
	dir := t.TempDir()
	db := filepath.Join(dir, "raft.db")
	bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		if err := bs.StoreLog(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogNoop, Data: make([]byte, 4096)}); err != nil {
			t.Fatal(err)
		}
	}
	bs.Close()
	// 8 KiB: raft.db's first write past its two meta pages fails, as raft-boltdb opens it; 64 KiB
	// (the tester's limit): the term raft stores as it bootstraps, where raft panics (this was
	// 'raft.db is damaged ... move --data-dir aside').
	for _, tc := range []struct{ limit, what string }{{"8192", "write " + db + ": "}, {"65536", "cannot write " + db + " (raft's CurrentTerm): "}} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStartNodeFileTooLargeRemedy$", "-test.count=1")
		cmd.Env = append(os.Environ(), "DDPM_TEST_FSIZE_DIR="+dir, "DDPM_TEST_FSIZE="+tc.limit)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		var line string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "ERR: ") {
				line = strings.TrimPrefix(l, "ERR: ")
			}
		}
		want := ": file too large: free space on the disk of --data-dir " + dir +
			" (or raise the file size limit, ulimit -f), then start this replica again"
		if !strings.HasPrefix(line, "coordinator: "+tc.what) || !strings.HasSuffix(line, want) || strings.Contains(line, "damaged") {
			t.Fatalf("error under a file size limit of %s bytes:\n%s\nwant coordinator: %s...%s", tc.limit, line, tc.what, want)
		}
	}
}
