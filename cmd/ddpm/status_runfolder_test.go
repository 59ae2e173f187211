package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/internal/localrun"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// startRunFolderCoordinator runs a real one-replica coordinator (raft, gRPC with mutual TLS) at
// the raft and gRPC ports local.json of the run folder run gives coordinator-0, with run's
// certificates (RUN/certs, made as ddpm local makes them), one trainer joined and steps 1..n
// reported; it returns the gRPC address.
func startRunFolderCoordinator(t *testing.T, run string, n int64) string {
	t.Helper()
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Steps, cfg.CheckpointEvery = 20, 10
	sec := tlsauthtest.Load(t, filepath.Join(run, localrun.CertsDir), nil)
	grpcAddr, raftAddr := localrun.Addr(man.CoordinatorPorts[0].GRPC), localrun.Addr(man.CoordinatorPorts[0].Raft)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "coordinator-0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers:   []coordinator.Peer{{ID: "coordinator-0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}},
		DataDir: localrun.CoordinatorDir(run, 0), Bootstrap: true, Run: &cfg, Version: "test", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	joined := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test", ConfigHash: cfg.Hash()})
	report(t, cli, joined.Generation, 1, n)
	return grpcAddr
}

// TestStatusLossTakeRunFolder: `ddpm status RUN` and `ddpm loss RUN`, RUN a ddpm local run
// folder, print what the same commands print given --coordinator and --certs as ddpm local's
// first lines name them (RUN/local.json's coordinator gRPC address, RUN/certs); RUN given with
// either flag, and a path that is no run folder, are refused in one line naming it, exit 2.
func TestStatusLossTakeRunFolder(t *testing.T) {
	run := makeLocalRun(t, 1, nil)
	addr := startRunFolderCoordinator(t, run, 6)
	certs := filepath.Join(run, localrun.CertsDir)
	for _, c := range []string{"status", "loss"} {
		want, err := runDDPM(t, c, "--coordinator", addr, "--certs", certs)
		if err != nil {
			t.Fatalf("ddpm %s --coordinator %s --certs %s: %v", c, addr, certs, err)
		}
		got, err := runDDPM(t, c, run)
		if err != nil {
			t.Fatalf("ddpm %s %s: %v", c, run, err)
		}
		if !strings.Contains(want, "trainer-a") && !strings.Contains(want, "0.266667") {
			t.Fatalf("ddpm %s with the flags printed neither the member nor step 6's loss:\n%s", c, want)
		}
		if got != want {
			t.Errorf("ddpm %s %s printed\n%s\nwant, as with --coordinator %s --certs %s:\n%s", c, run, got, addr, certs, want)
		}
	}
	// --csv beside RUN: the same file as with the flags.
	flagsCSV, runCSV := filepath.Join(t.TempDir(), "flags.csv"), filepath.Join(t.TempDir(), "run.csv")
	if _, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", certs, "--csv", flagsCSV); err != nil {
		t.Fatal(err)
	}
	if _, err := runDDPM(t, "loss", run, "--csv", runCSV); err != nil {
		t.Fatalf("ddpm loss %s --csv %s: %v", run, runCSV, err)
	}
	if a, b := readRunFolderTestFile(t, flagsCSV), readRunFolderTestFile(t, runCSV); a != b || a == "" {
		t.Errorf("ddpm loss %s --csv wrote\n%s\nwant, as with the flags:\n%s", run, b, a)
	}

	trainerDir := filepath.Join(t.TempDir(), "vol")
	if err := os.MkdirAll(trainerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(trainerDir, "checkpoints.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	plain := t.TempDir()
	file := filepath.Join(plain, "notes.txt")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(plain, "gone")
	both := " or --%s, not both (" + filepath.Join(run, "local.json") + " names its coordinators, " + certs + " holds its certificates)"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", run, "--coordinator", addr}, "status: give the run folder " + run + fmt.Sprintf(both, "coordinator")},
		{[]string{"loss", "--certs", certs, run}, "loss: give the run folder " + run + fmt.Sprintf(both, "certs")},
		{[]string{"status", run, "--insecure"}, "status: give the run folder " + run + fmt.Sprintf(both, "insecure")},
		{[]string{"status", trainerDir}, "status: " + trainerDir + " is a trainer's folder (checkpoints.db), not a ddpm local run folder (no local.json): give the run folder, or --coordinator ADDR --certs DIR"},
		{[]string{"loss", plain}, "loss: " + plain + " is not a ddpm local run folder (no local.json): give the run folder, or --coordinator ADDR --certs DIR"},
		{[]string{"loss", file}, "loss: " + file + " is a file, not a ddpm local run folder: give the run folder, or --coordinator ADDR --certs DIR"},
		{[]string{"status", missing}, "status: " + missing + " is not a ddpm local run folder (no such file or folder): give the run folder, or --coordinator ADDR --certs DIR"},
	} {
		out, err := runDDPM(t, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
		if out != "" {
			t.Errorf("ddpm %v printed %q before its refusal", tc.args, out)
		}
	}
}

func readRunFolderTestFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
