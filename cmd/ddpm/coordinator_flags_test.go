package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestCoordinatorOwnPeerChecked: a coordinator started by hand with another replica's --id (or
// an --id missing from --peers) is refused at once with one line, exit 2, writing nothing; with
// c2's addresses and data dir but --id c1 it used to run as a second c1 beside the real one,
// voting in raft under its name.
func TestCoordinatorOwnPeerChecked(t *testing.T) {
	peers := "c0=127.0.0.1:17000=127.0.0.1:17001,c1=127.0.0.1:17010=127.0.0.1:17011,c2=127.0.0.1:17020=127.0.0.1:17021"
	dir := filepath.Join(t.TempDir(), "raft")
	for _, tc := range []struct {
		id, raft, grpc, want string
	}{
		{"c1", "127.0.0.1:17020", "127.0.0.1:17021", "--raft-addr 127.0.0.1:17020 is not c1's raft address in --peers (127.0.0.1:17010): give each replica its own --id"},
		{"c2", "127.0.0.1:17020", "127.0.0.1:17011", "--grpc-addr 127.0.0.1:17011 is not c2's gRPC address in --peers (127.0.0.1:17021): give each replica its own --id"},
		{"c2", "127.0.0.2:17020", "127.0.0.1:17021", "--raft-addr 127.0.0.2:17020 is not c2's raft address in --peers (127.0.0.1:17020): give each replica its own --id"},
		{"c3", "127.0.0.1:17030", "127.0.0.1:17031", "--id c3 is not among --peers (c0, c1, c2)"},
	} {
		args := []string{"coordinator", "--id", tc.id, "--raft-addr", tc.raft, "--grpc-addr", tc.grpc, "--peers", peers,
			"--data-dir", dir, "--insecure", "--bootstrap"}
		t0 := time.Now()
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("%v took %v, want at once", args, d)
		}
	}
	mustNotExist(t, dir)
	for _, ok := range [][2]string{
		{"0.0.0.0:7001", "10.0.0.5:7001"},                             // a wildcard listen address
		{"10.0.0.5:7000", "ddpm-coordinator-0.ddpm-coordinator:7000"}, // Kubernetes: pod IP, stable name
		{":7001", "127.0.0.1:7001"},
	} {
		if !sameEndpoint(ok[0], ok[1]) {
			t.Errorf("sameEndpoint(%q, %q) = false", ok[0], ok[1])
		}
	}
}
