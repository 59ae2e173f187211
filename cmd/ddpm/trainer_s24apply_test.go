package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// listing is dir's entries as "name size mode mtime" lines, sorted: what a refusal must leave
// as it was.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %v %d", e.Name(), fi.Size(), fi.Mode(), fi.ModTime().UnixNano()))
	}
	slices.Sort(out)
	return out
}

// TestApplyS24TrainerRefusesCoordinatorDataDir: `ddpm trainer --data-dir D` where D is a
// (stopped) real coordinator replica's data dir, raft.db in it, exits 2 with one line saying so
// and writes nothing there. The trainer trained in it, writing checkpoints.db and run.yaml beside
// raft.db, and the replica then refused to restart on the folder.
func TestApplyS24TrainerRefusesCoordinatorDataDir(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "c0")
	raftAddr, grpcAddr := freeAddr(t), freeAddr(t)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: dir,
		Bootstrap: true, Version: "dev", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	node.Close()
	if _, err := os.Stat(filepath.Join(dir, "raft.db")); err != nil {
		t.Fatalf("the replica left no raft.db: %v", err)
	}
	before := listing(t, dir)
	for _, args := range [][]string{
		{"trainer", "--preset", "mnist", "--coordinator", grpcAddr, "--listen", freeAddr(t), "--data-dir", dir, "--insecure"},
		{"trainer", "--preset", "mnist", "--standalone", "--steps", "2", "--data-dir", dir},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		want := "ddpm: --data-dir " + dir + ": a coordinator's data dir (raft.db), not a trainer's volume; give a new folder\n"
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("ddpm %v: %v, stdout %q, stderr %q\nwant exit status 2, stderr %q", args, err, stdout.String(), stderr.String(), want)
		}
		if after := listing(t, dir); !slices.Equal(after, before) {
			t.Fatalf("ddpm %v changed the replica's folder:\nbefore %q\nafter  %q", args, before, after)
		}
	}
}
