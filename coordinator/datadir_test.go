package coordinator

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// writeRunFolder lays out what `ddpm local` leaves in its output folder: run.yaml, local.json and
// trainer-0/checkpoints.db (a real bbolt file).
func writeRunFolder(t *testing.T, run string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(run, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(run, "trainer-0", "checkpoints.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, text := range map[string]string{"local.json": "{}\n", "run.yaml": "preset: mnist\n"} {
		if err := os.WriteFile(filepath.Join(run, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStartNodeRefusesOtherFolders: a ddpm local run folder (local.json or trainer-0/
// checkpoints.db) or a trainer's folder (checkpoints.db) given as DataDir is refused with one
// line naming it, what it is and what to give instead (ErrNotDataDir), and nothing is written
// there; StartNode wrote raft.db and snapshots/ into it without a word. The run folder's own
// coordinator-0 folder still starts a replica.
func TestStartNodeRefusesOtherFolders(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	writeRunFolder(t, run)
	onlyTrainer := filepath.Join(root, "run2")
	if err := os.MkdirAll(filepath.Join(onlyTrainer, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(onlyTrainer, "trainer-0", "checkpoints.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	trainer := filepath.Join(run, "trainer-0")
	addrs := freeAddrs(t, 2)
	p := Peer{ID: "c0", RaftAddr: addrs[0], GRPCAddr: addrs[1]}
	start := func(dir string) (*Node, error) {
		return StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: []Peer{p},
			DataDir: dir, Bootstrap: true, Version: "v1", Security: insecureBundle(t)})
	}
	for _, tc := range []struct{ dir, want string }{
		{run, "coordinator: --data-dir " + run + ": a ddpm local run folder, not a coordinator's data dir; " +
			"give a new folder (the run's own coordinators keep their raft data in " + filepath.Join(run, "coordinator-N") + ")"},
		{onlyTrainer, "coordinator: --data-dir " + onlyTrainer + ": a ddpm local run folder, not a coordinator's data dir; " +
			"give a new folder (the run's own coordinators keep their raft data in " + filepath.Join(onlyTrainer, "coordinator-N") + ")"},
		{trainer, "coordinator: --data-dir " + trainer + ": a trainer's folder (checkpoints.db), not a coordinator's data dir; give a new folder"},
	} {
		node, err := start(tc.dir)
		if err == nil {
			node.Close()
		}
		if !errors.Is(err, ErrNotDataDir) || err.Error() != tc.want {
			t.Errorf("StartNode(DataDir %s):\n got %v\nwant %s", tc.dir, err, tc.want)
		}
		for _, name := range []string{"raft.db", "snapshots"} {
			if _, err := os.Stat(filepath.Join(tc.dir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s written into %s (stat: %v)", name, tc.dir, err)
			}
		}
	}
	if err := CheckDataDir(filepath.Join(root, "none")); err != nil {
		t.Errorf("CheckDataDir of a folder not yet made: %v", err)
	}
	// The replica of the run folder itself (ddpm local's coordinator-0) starts and writes there.
	own := filepath.Join(run, "coordinator-0")
	node, err := start(own)
	if err != nil {
		t.Fatalf("StartNode(DataDir %s): %v", own, err)
	}
	node.Close()
	if _, err := os.Stat(filepath.Join(own, "raft.db")); err != nil {
		t.Error(err)
	}
}
