package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/internal/viz"
)

// handedOut holds every address freeAddr returned in this test process.
var handedOut sync.Map

// freeAddr is a loopback address whose port was free a moment ago and that no earlier call in
// this process returned: the kernel may hand a port just closed out again, and two calls in a
// row (a replica's --grpc-addr and --raft-addr) then named one port, so the second bind failed
// as in use by this very process (a clean-clone make test of 0ae9808 failed
// TestDamagedDataLeavesRunGoing so).
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 1000 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
	t.Fatal("freeAddr: every port the kernel offered was handed out before")
	return ""
}

// monitorLoss is the stream the trainer reports in these tests.
func monitorLoss(step int64) float64 { return 0.1 + 1/float64(step) }

// monitorCerts is the certificate directory of the node startMonitoredNode runs last.
var monitorCerts string

// monitoredRun is the run config startMonitoredNode serves: the mnist preset, 20 steps, a
// checkpoint every 10, and a heartbeat timeout of a minute. The trainer the tests play sends no
// heartbeats; at the preset's 5 s it was dropped (its generation ended) whenever a loaded
// machine took that long between its last report and the command under test (a process to
// start, a --follow's first CSV of up to 20 s).
func monitoredRun(t *testing.T) config.Run {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.HeartbeatTimeout = 20, 10, config.Duration(time.Minute)
	return run
}

// startMonitoredNode runs a real one-replica coordinator on loopback with monitoredRun
// configured, one trainer joined and steps 1..n reported through gRPC; it returns the gRPC
// address.
func startMonitoredNode(t *testing.T, n int64) (string, *coordinator.Client, uint64) {
	t.Helper()
	run := monitoredRun(t)
	monitorCerts = tlsauthtest.Dir(t)
	grpcAddr, cli := startReplica(t, run, "test", monitorCerts)
	joined := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test", ConfigHash: run.Hash()})
	report(t, cli, joined.Generation, 1, n)
	return grpcAddr, cli, joined.Generation
}

// startReplica runs a real one-replica coordinator cluster on loopback with run configured,
// binary version version and mutual TLS from the certificate directory certs; it returns the
// gRPC address and a client.
func startReplica(t *testing.T, run config.Run, version, certs string) (string, *coordinator.Client) {
	t.Helper()
	sec := tlsauthtest.Load(t, certs, nil)
	grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: t.TempDir(),
		Bootstrap: true, Run: &run, Version: version, Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	cli, err := coordinator.Dial([]string{grpcAddr}, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return grpcAddr, cli
}

// joinWhenLeading joins req, retrying for up to 20 s while the replica has no run config yet (a
// node submits its config once it leads).
func joinWhenLeading(t *testing.T, cli *coordinator.Client, req coordinator.JoinRequest) coordinator.Joined {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		j, err := cli.Join(ctx, req)
		if err == nil {
			return j
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// report sends rank 0's progress for steps [from, to].
func report(t *testing.T, cli *coordinator.Client, gen uint64, from, to int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for s := from; s <= to; s++ {
		if _, err := cli.ReportProgress(ctx, &api.ReportProgressRequest{Id: "trainer-a", Generation: gen, Step: s,
			Loss: monitorLoss(s), LossQuartiles: []float64{4, 3, 2, 1}, GradNorm: 1, Lr: 1e-4 * float64(s), ImagesPerSec: 32}); err != nil {
			t.Fatal(err)
		}
	}
}

// runDDPM runs the command line in-process (stdout returned) with the monitoring commands' flags
// at their defaults.
func runDDPM(t *testing.T, args ...string) (string, error) {
	t.Helper()
	statusFlags.coordinator, statusFlags.timeout = "", 10*time.Second
	lossFlags.coordinator, lossFlags.png, lossFlags.csv, lossFlags.follow, lossFlags.force = "", "", "", false, false
	lossFlags.every, lossFlags.timeout = 2*time.Second, 10*time.Second
	for _, c := range []*cobra.Command{lossCmd, statusCmd} { // checks that look at what was given
		c.Flags().VisitAll(func(f *pflag.Flag) { f.Changed = false })
	}
	*statusFlags.sec = tlsauth.Config{ServerName: tlsauth.NodeName}
	*lossFlags.sec = tlsauth.Config{ServerName: tlsauth.NodeName}
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetArgs(args)
	defer rootCmd.SetArgs(nil)
	err := rootCmd.Execute()
	return out.String(), err
}

func TestStatusAndLossCommands(t *testing.T) {
	addr, _, _ := startMonitoredNode(t, 12)

	out, err := runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	// Compare with runs of spaces collapsed: the tables' column widths are tabwriter's business.
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"RUN running step 12 / 20 (60.0%) preset / model mnist / tiny", "global batch 32",
		fmt.Sprintf("loss %.5g at step 12 (lr 0.0012, grad norm 1, 32.0 images/s)", monitorLoss(12)),
		"replica c0 (leader c0,", "GENERATION 1 world 1 ring trainer-a start step 0",
		"MEMBER STATE RANK STEP ADDRESS VERSION LAST HEARTBEAT trainer-a active 0 12 127.0.0.1:7000 test",
		"CHECKPOINT SHA256 SIZE GENERATION HOLDERS COMMITTED (none committed)"} {
		if !strings.Contains(flat, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "restarting") {
		t.Errorf("status of a running generation says it is restarting:\n%s", out)
	}

	out, err = runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 13 || !strings.HasPrefix(lines[0], "STEP") {
		t.Fatalf("loss table: %d lines:\n%s", len(lines), out)
	}
	if f := strings.Fields(lines[12]); f[0] != "12" || f[1] != fmt.Sprintf("%.6g", monitorLoss(12)) || f[4] != "4" || f[11] != "1" {
		t.Errorf("last row %q", lines[12])
	}

	dir := t.TempDir()
	csvPath, pngPath := filepath.Join(dir, "loss.csv"), filepath.Join(dir, "loss.png")
	if _, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts, "--csv", csvPath, "--png", pngPath); err != nil {
		t.Fatal(err)
	}
	pts, err := viz.ReadLossCSV(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 12 {
		t.Fatalf("csv has %d points, want 12", len(pts))
	}
	for i, p := range pts {
		s := int64(i + 1)
		if p != (viz.LossPoint{Step: s, Loss: monitorLoss(s), LR: 1e-4 * float64(s), GradNorm: 1}) {
			t.Errorf("csv point %d: %+v", i, p)
		}
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 100 {
		t.Fatalf("loss.png: %v", err)
	}

	// Outsiders: refused with the cause in one line, exit 1 (another CA's --certs: exit 2,
	// TestStatusOtherCA).
	for _, tc := range []struct {
		certs, want string
	}{
		{tlsauthtest.WrongSecret(t, monitorCerts), "coordinator: refused by the cluster: ddpm: wrong join secret"},
	} {
		_, err := runDDPM(t, "status", "--coordinator", addr, "--certs", tc.certs, "--timeout", "1s")
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("status with %s: %v, want exit 1 naming %q", tc.certs, err, tc.want)
		}
	}

	// Bad input: one line, exit 2, nothing written.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, "status: --coordinator ADDR is required (a coordinator's gRPC host:port)"},
		{[]string{"status", "--coordinator", addr, "--certs", monitorCerts, "--timeout", "-1s"}, "status: --timeout must be positive, got -1s"},
		{[]string{"loss", "--coordinator", addr, "--certs", monitorCerts, "--png", filepath.Join(dir, "missing", "x.png")},
			"loss: --png " + filepath.Join(dir, "missing", "x.png") + ": folder " + filepath.Join(dir, "missing") + " does not exist"},
		{[]string{"loss", "--coordinator", addr, "--certs", monitorCerts, "--csv", csvPath},
			"loss: --csv " + csvPath + " already exists (give --force to replace it)"},
		{[]string{"loss", "--coordinator", addr, "--certs", monitorCerts, "--png", dir},
			"loss: --png " + dir + " is a directory, not a file"},
		{[]string{"loss", "--coordinator", addr, "--certs", monitorCerts, "--every", "0s", "--follow"}, "loss: --every must be positive, got 0s"},
		// A client needs the cluster's certificates, not new ones: the line said "make one with
		// `ddpm certs init DIR`".
		{[]string{"status", "--coordinator", addr}, "status: --certs DIR is required: the certificates the cluster was started with (a ddpm local run's are in RUN/certs, as its first lines say); --insecure only for a cluster started with --insecure"},
		{[]string{"loss", "--coordinator", addr}, "loss: --certs DIR is required: the certificates the cluster was started with (a ddpm local run's are in RUN/certs, as its first lines say); --insecure only for a cluster started with --insecure"},
		{[]string{"checkpoint", "rollback", "--coordinator", addr, "--to-step", "0"}, "checkpoint rollback: --certs DIR is required: the certificates the cluster was started with (a ddpm local run's are in RUN/certs, as its first lines say); --insecure only for a cluster started with --insecure"},
		{[]string{"checkpoint", "fetch", addr, "--step", "5", "--out", filepath.Join(dir, "missing.db")}, "checkpoint fetch: --certs DIR is required: the certificates the cluster was started with (a ddpm local run's are in RUN/certs, as its first lines say); --insecure only for a cluster started with --insecure"},
		{[]string{"status", "--coordinator", addr, "--certs", monitorCerts, "--insecure"},
			"tlsauth: choose TLS (--certs DIR) or plain text (--insecure): --insecure and --certs " + monitorCerts + " exclude each other"},
	} {
		// runCLI: every command's flags at their defaults, not only status's and loss's (a
		// --certs that an earlier test gave checkpoint rollback or fetch stayed set otherwise).
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 || err.Error() != tc.want {
			t.Errorf("%v: %v, want exit 2 %q", tc.args, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Error("a refused command created a directory")
	}
}

// TestLossFollow: --follow rewrites the CSV as points arrive and returns when the run ends.
// TestStatusWhileRestarting: once the only trainer has left, the generation it trained in is
// over and the run stands at its last committed checkpoint (none: step 0) while the loss history
// still ends at step 12; status says both.
func TestStatusWhileRestarting(t *testing.T) {
	addr, cli, _ := startMonitoredNode(t, 12)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Leave(ctx, "trainer-a"); err != nil {
		t.Fatal(err)
	}
	out, err := runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"step 0 / 20 (0.0%): restarting from the last committed checkpoint (steps 1-12 are recomputed)",
		fmt.Sprintf("loss %.5g at step 12", monitorLoss(12)), "GENERATION 2 world 0"} {
		if !strings.Contains(flat, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// TestStatusShowsAdoptedCheckpoint: a trainer joining with a committed checkpoint the
// coordinators have no record of (their data was lost) brings it back; status lists it as
// adopted, without a size.
func TestStatusShowsAdoptedCheckpoint(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery = 20, 10
	monitorCerts = tlsauthtest.Dir(t)
	addr, cli := startReplica(t, run, "test", monitorCerts)
	sha := strings.Repeat("3c", 32)
	joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-b", Address: "127.0.0.1:7001", Version: "test", ConfigHash: run.Hash(),
		Held: []fsm.Held{{Step: 10, SHA256: sha}}})
	out, err := runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	if want := "10 " + sha[:16] + " - adopted trainer-b"; !strings.Contains(flat, want) {
		t.Errorf("status output lacks %q:\n%s", want, out)
	}
}

// TestLossQuartilesWithoutSamples: a step whose batch left a quarter of [0, T) empty reports
// that quartile as -1 (a trainer sends NaN as -1), and a report may carry no quartiles at all;
// `ddpm loss` shows "-" there instead of a 0 that would also enter down-sampled means.
func TestLossQuartilesWithoutSamples(t *testing.T) {
	addr, cli, gen := startMonitoredNode(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, r := range []*api.ReportProgressRequest{
		{Id: "trainer-a", Generation: gen, Step: 3, Loss: 0.5, LossQuartiles: []float64{-1, 0.3, 0.2, 0.1}},
		{Id: "trainer-a", Generation: gen, Step: 4, Loss: 0.4},
	} {
		if _, err := cli.ReportProgress(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := strings.Fields(line)
		rows[f[0]] = f
	}
	if q := rows["3"][4:8]; strings.Join(q, " ") != "- 0.3 0.2 0.1" {
		t.Errorf("step 3 quartiles %v, want - 0.3 0.2 0.1", q)
	}
	if q := rows["4"][4:8]; strings.Join(q, " ") != "- - - -" {
		t.Errorf("step 4 quartiles %v, want - - - -", q)
	}
	if q := rows["2"][4:8]; strings.Join(q, " ") != "4 3 2 1" {
		t.Errorf("step 2 quartiles %v, want 4 3 2 1", q)
	}
}

// followResult is what `ddpm loss --follow` printed and returned.
type followResult struct {
	out string
	err error
}

// followLoss runs `ddpm loss --follow --csv csvPath` against addr in the background and returns
// once the CSV holds n points (within 20 s); the command's result arrives on the channel.
func followLoss(t *testing.T, addr, csvPath string, n int) <-chan followResult {
	t.Helper()
	done := make(chan followResult, 1)
	go func() {
		out, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts, "--follow", "--every", "50ms", "--csv", csvPath)
		done <- followResult{out, err}
	}()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if pts, err := viz.ReadLossCSV(csvPath); err == nil && len(pts) == n {
			return done
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CSV of %d points within 20 s", n)
		}
	}
}

func TestLossFollow(t *testing.T) {
	addr, cli, gen := startMonitoredNode(t, 5)
	csvPath := filepath.Join(t.TempDir(), "loss.csv")
	done := followLoss(t, addr, csvPath, 5) // the first write holds the first five points
	report(t, cli, gen, 6, 20)              // step 20 is the last
	// The run succeeds when its final checkpoint commits (the only rank reports it).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.CheckpointReady(ctx, &api.CheckpointReadyRequest{Id: "trainer-a", Generation: gen, Step: 20,
		Sha256: strings.Repeat("ab", 32), Size: 1024}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !strings.HasSuffix(r.out, "20 points up to step 20 written\nrun succeeded\n") {
			t.Errorf("output:\n%s", r.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ddpm loss --follow did not return after the run ended")
	}
	pts, err := viz.ReadLossCSV(csvPath)
	if err != nil || len(pts) != 20 || pts[19].Loss != monitorLoss(20) {
		t.Fatalf("final csv: %d points, %v", len(pts), err)
	}
}
