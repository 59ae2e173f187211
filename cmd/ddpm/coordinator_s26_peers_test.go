package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestCoordinatorS26FreshWrongPeers: replica c0 of c0,c1,c2 runs (real process, TLS, real
// raft.db; started alone, with nobody to ask, it starts as before). c2, started on a new
// --data-dir with a --peers that leaves c1 out, or that gives c1 another raft port, asks c0 and
// is refused before it writes anything: one line naming c0's configuration and its own list,
// status 2, its --data-dir left as it was (absent, or the empty folder it was). c1 with the
// cluster's --peers starts. The refused starts are given --peers-wait 1m, so a slow answer from
// c0 is waited for (c1, not up, refuses the connection at once); --peers-wait 0 is refused. On
// the old code c2 bootstrapped its own configuration and ran,
// caught only on writes and at its next restart.
func TestCoordinatorS26FreshWrongPeers(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	var raft, grpc [3]string
	var list []string
	for i := range raft {
		raft[i], grpc[i] = freeAddr(t), freeAddr(t)
		list = append(list, "c"+string(rune('0'+i))+"="+raft[i]+"="+grpc[i])
	}
	peers := strings.Join(list, ",")
	base := t.TempDir()
	start := func(id, peers, dir string) []string {
		i := int(id[1] - '0')
		return []string{"coordinator", "--id", id, "--raft-addr", raft[i], "--grpc-addr", grpc[i], "--peers", peers,
			"--data-dir", dir, "--bootstrap", "--preset", "mnist", "--certs", certs}
	}
	startOpCoordinator(t, bin, 60*time.Second, start("c0", peers, filepath.Join(base, "c0"))...)

	held := "c0=" + raft[0] + ",c1=" + raft[1] + ",c2=" + raft[2]
	otherRaft := freeAddr(t)
	empty := filepath.Join(base, "c2-empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	runRefused(t, bin, 2, "ddpm: coordinator: --peers-wait 0s: want a duration above 0, such as 3s\n",
		append(start("c2", peers, filepath.Join(base, "c2")), "--peers-wait", "0")...)
	for _, tc := range []struct {
		peers, lists, dir string
	}{
		{list[0] + "," + list[2], "c0=" + raft[0] + ",c2=" + raft[2], filepath.Join(base, "c2")},
		{list[0] + ",c1=" + otherRaft + "=" + grpc[1] + "," + list[2], "c0=" + raft[0] + ",c1=" + otherRaft + ",c2=" + raft[2], empty},
	} {
		runRefused(t, bin, 2, "ddpm: coordinator: --peers is not the cluster's raft configuration: replica c0 (gRPC "+grpc[0]+
			") runs a cluster of replicas "+held+" (id=raft address), --peers lists "+tc.lists+"; give this replica the --peers "+
			"that cluster began with, or, if this --peers is the one meant, stop the replicas running the other cluster first "+
			"(--data-dir "+tc.dir+" was left as it was)\n", append(start("c2", tc.peers, tc.dir), "--peers-wait", "1m")...)
	}
	mustNotExist(t, filepath.Join(base, "c2"))
	if ents, err := os.ReadDir(empty); err != nil || len(ents) != 0 {
		t.Errorf("%s after the refusal: %v %v, want the empty folder it was", empty, ents, err)
	}
	startOpCoordinator(t, bin, 60*time.Second, start("c1", peers, filepath.Join(base, "c1"))...)
}
