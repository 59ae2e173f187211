package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"ddpm/allreduce"
	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// clusterS27 is a cluster of the ring-transport tests: one coordinator replica in the test's
// process and `ddpm trainer` processes, all with mutual TLS (certs) or all with --insecure.
type clusterS27 struct {
	bin, dir, cfg string
	run           config.Run
	certs         string // "" with --insecure
	coord         string // the replica's gRPC address
	cli           *coordinator.Client
}

// startClusterS27 writes a procRun of steps (2 trainers exactly, heartbeat timeout hb; edit, if
// any, applied after) under a fresh folder and starts its coordinator replica: with --insecure when
// insecure, else with a fresh certificate directory.
func startClusterS27(t *testing.T, insecure bool, steps int64, hb time.Duration, edit func(*config.Run)) *clusterS27 {
	t.Helper()
	c := &clusterS27{bin: testutil.DDPMBinary(t), dir: t.TempDir()}
	c.run, c.cfg = procRun(t, c.dir, steps, 2, 2, hb, edit)
	var sec *tlsauth.Bundle
	if insecure {
		sec = tlsauthtest.Insecure(t)
	} else {
		c.certs = tlsauthtest.Dir(t)
		sec = tlsauthtest.Load(t, c.certs, nil)
	}
	grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
	node, err := coordinator.StartNode(coordinator.NodeConfig{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr,
		Peers: []coordinator.Peer{{ID: "c0", RaftAddr: raftAddr, GRPCAddr: grpcAddr}}, DataDir: t.TempDir(),
		Bootstrap: true, Run: &c.run, Version: "dev", Security: sec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	if c.cli, err = coordinator.Dial([]string{grpcAddr}, sec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cli.Close() })
	c.coord = grpcAddr
	return c
}

// trainer starts `ddpm trainer --id id` of c on a fresh --listen address, its volume the
// folder vol under c's (which may exist from an earlier process).
func (c *clusterS27) trainer(t *testing.T, id, vol string) *trainerProc {
	t.Helper()
	if c.certs != "" {
		return launchTrainer(t, c.bin, filepath.Join(c.dir, vol), id, freeAddr(t), c.coord, c.cfg, c.certs)
	}
	// launchTrainer gives --certs CERTS; an empty one is no directory, and --insecure then
	// holds alone (tlsauth.Load refuses the two together only with a directory named).
	return launchTrainer(t, c.bin, filepath.Join(c.dir, vol), id, freeAddr(t), c.coord, c.cfg, "", "--insecure")
}

// answersDirectS27 reports whether the server at addr answers a client that opens as a ring's
// direct connection does (HTTP/2's preface, then SETTINGS carrying the private setting 0xdd01,
// allreduce's settingDirect, of version 1) with SETTINGS carrying that setting too: the port is
// wrapped by allreduce.Endpoint.DirectListener. A plain grpc.Server answers SETTINGS without it,
// a TLS one closes the connection (both false).
func answersDirectS27(t *testing.T, addr string) bool {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(nc, bufio.NewReader(nc))
	if err := fr.WriteSettings(http2.Setting{ID: 0xdd01, Val: 1}); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Logf("%s: no first frame after a direct client's opening: %v", addr, err)
		return false
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Logf("%s opened with %v, not SETTINGS", addr, f.Header())
		return false
	}
	v, has := sf.Value(0xdd01)
	return has && v == 1
}

// directS27 waits (a minute at most) for trainer id of c (process p) to be a member, which it becomes once its
// --listen port serves, and fails t unless that port answers a direct client (answersDirectS27)
// exactly when want: run before the ring's second trainer starts, so the run cannot end first.
func directS27(t *testing.T, c *clusterS27, id string, p *trainerProc, want bool) {
	t.Helper()
	waitFor(t, c.cli, "member "+id, time.Minute, func(s *fsm.State) bool { return s.Members[id] != nil })
	if got := answersDirectS27(t, p.listen); got != want {
		t.Errorf("%s's --listen %s answers a direct client as one: %t, want %t (certificates %q)", id, p.listen, got, want, c.certs)
	}
}

// lossS27 is the loss history of st without what timing decides (the report's time, images per
// second, compute, all-reduce and wait seconds, bus bandwidth): rank 0's values of each step
// (loss, quartiles, gradient norm, learning rate), as JSON.
func lossS27(t *testing.T, st *fsm.State) string {
	t.Helper()
	pts := append([]fsm.LossPoint(nil), st.Loss.Points...)
	for i := range pts {
		p := &pts[i]
		p.Time, p.ImagesPerSec, p.ComputeSec, p.AllReduceSec, p.WaitSec, p.BusBW = 0, 0, 0, 0, 0, 0
	}
	b, err := json.Marshal(pts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRingDirectS27SameBitsEitherTransport: the same run (the mnist tiny U-Net, 8 steps, 3
// trainers, a world of 3 throughout, global batch 12) trained once with mutual TLS (the ring on
// grpc-go's transport) and once with --insecure (the ring on direct connections: checked by
// asking a trainer's --listen port for one) ends with the same bits: the step-8 state hash
// (checkpoint.StateHash) of every trainer of both runs is one, and the loss history the
// coordinators keep (rank 0's reports of every step, timings left out) is equal. At 3 ranks a
// chunk's partial sum crosses two hops before it is copied round the ring (each rank's chunk of
// the 0.83 MB gradient of 208,305 parameters is one sub-chunk, one DATA frame); a direct path
// that summed or copied a received sub-chunk differently would differ in both.
func TestRingDirectS27SameBitsEitherTransport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two clusters of trainer processes")
	}
	const steps, world = 8, 3
	type result struct {
		hash [world]string
		loss string
	}
	train := func(insecure bool) result {
		c := startClusterS27(t, insecure, steps, 10*time.Second, func(r *config.Run) {
			r.MinTrainers, r.MaxTrainers, r.GlobalBatch = world, world, 4*world
		})
		procs := map[string]*trainerProc{}
		for i := range world {
			id := fmt.Sprintf("t%d", i)
			procs[id] = c.trainer(t, id, id)
			if i == 0 {
				// Before the others start, so that the run cannot have ended.
				directS27(t, c, id, procs[id], insecure)
			}
		}
		final := finishProcs(t, c.cli, c.run, procs)
		// Each trainer says how its ring's stream runs: direct on --insecure, grpc-go with
		// TLS, and no trainer fell back (allreduce.Config.Log).
		wantTransport := map[bool]string{true: "direct", false: "grpc"}[insecure]
		for id, p := range procs {
			text, err := os.ReadFile(p.log)
			if err != nil {
				t.Fatal(err)
			}
			open := jsonRecords(text, allreduce.MsgRingOpen)
			if len(open) == 0 || len(jsonRecords(text, allreduce.MsgRingFellBack)) != 0 {
				t.Errorf("insecure %t: %s logged %d %q lines and %d %q", insecure, id, len(open), allreduce.MsgRingOpen,
					len(jsonRecords(text, allreduce.MsgRingFellBack)), allreduce.MsgRingFellBack)
			}
			for _, rec := range open {
				if rec["transport"] != wantTransport {
					t.Errorf("insecure %t: %s logged %v; want transport %s", insecure, id, rec, wantTransport)
				}
			}
		}
		var r result
		for i := range world {
			r.hash[i] = finalStateS25(t, filepath.Join(c.dir, fmt.Sprintf("t%d", i)), steps)
		}
		r.loss = lossS27(t, final)
		if n := len(final.Loss.Points); n == 0 || final.Loss.Points[n-1].Step != steps || final.Generation.World != world {
			t.Errorf("insecure %t: world %d at the end, loss history %s; want world %d, points up to step %d", insecure, final.Generation.World, r.loss, world, steps)
		}
		return r
	}
	tls, plain := train(false), train(true)
	for i := range world {
		if tls.hash[i] != tls.hash[0] || plain.hash[i] != tls.hash[0] {
			t.Errorf("t%d's step-%d state: %s with TLS (grpc-go), %s with --insecure (direct); t0 with TLS %s", i, steps, tls.hash[i], plain.hash[i], tls.hash[0])
		}
	}
	if tls.loss != plain.loss {
		t.Errorf("loss history with TLS (grpc-go):\n%s\nwith --insecure (direct):\n%s", tls.loss, plain.loss)
	}
}

// TestRingDirectS27ListenServesOthers: the --listen port of a trainer run with --insecure, whose
// ring connections allreduce.DirectListener serves, still hands every other connection to the
// trainer's gRPC server, with real processes. Once a checkpoint is committed, t1 is stopped
// (SIGSTOP) and dropped, so that the run waits for a second trainer while:
//   - `ddpm checkpoint fetch T0 --insecure` copies the newest committed checkpoint, whose sha256
//     is the coordinators'; with --certs it says in one line (exit 2) to give --insecure;
//   - `ddpm status --coordinator T0` says at once (exit 2) what answers there, with --insecure
//     (a gRPC call answered Unimplemented) and with --certs (the CLI's port probe: a TLS hello
//     handed to gRPC's plain-text server, which answers in HTTP/2).
//
// Then t1 is killed and started again on an empty volume: it fetches the restart point from t0
// through that port, and the run ends with both trainers' last state equal.
func TestRingDirectS27ListenServesOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a cluster of trainer processes")
	}
	const steps = 40
	// Every checkpoint kept: the one fetched stays committed on t0 whatever the run did since.
	c := startClusterS27(t, true, steps, 3*time.Second, func(r *config.Run) { r.KeepCheckpoints = 100 })
	t0 := c.trainer(t, "t0", "t0")
	directS27(t, c, "t0", t0, true)
	t1 := c.trainer(t, "t1", "t1")
	waitFor(t, c.cli, "a committed checkpoint of the 2-trainer ring", 3*time.Minute, func(s *fsm.State) bool {
		return len(s.Checkpoints) > 0 && s.Generation.World == 2 || s.Status.Terminal()
	})
	if err := t1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	st := waitFor(t, c.cli, "drop of the stopped t1", time.Minute, func(s *fsm.State) bool { return s.Members["t1"] == nil || s.Status.Terminal() })
	if st.Status.Terminal() {
		t.Fatalf("the run ended (%s) before the checks", st.Status)
	}
	ck := st.Checkpoints[len(st.Checkpoints)-1]

	out := filepath.Join(t.TempDir(), "fetched.db")
	stdout, stderr, code := ddpmRun(t, c.bin, "checkpoint", "fetch", t0.listen, "--step", fmt.Sprint(ck.Step), "--out", out, "--insecure")
	if want := fmt.Sprintf("%s: step %d (sha256 %s) -> %s\n", t0.listen, ck.Step, ck.SHA256[:16], out); code != 0 || stdout != want {
		t.Errorf("checkpoint fetch from t0: exit %d, stdout %q, stderr %q\nwant exit 0 and %q", code, stdout, stderr, want)
	} else if got := fetchedSHAS27(t, out, ck.Step); got != ck.SHA256 {
		t.Errorf("%s holds step %d with sha256 %s, the coordinators committed %s", out, ck.Step, got, ck.SHA256)
	}

	// With --certs, the TLS hello reaches gRPC's plain-text server too, whose answer says which
	// flag to give. It was gRPC's own error, exit 1.
	certs := tlsauthtest.Dir(t)
	stdout, stderr, code = ddpmRun(t, c.bin, "checkpoint", "fetch", t0.listen, "--step", fmt.Sprint(ck.Step), "--out", filepath.Join(t.TempDir(), "tls.db"), "--certs", certs)
	if want := "ddpm: checkpoint fetch: the trainer at " + t0.listen + " serves gRPC in plain text (a trainer started with --insecure) and this process uses --certs: give --insecure instead of --certs\n"; code != 2 || stdout != "" || stderr != want {
		t.Errorf("checkpoint fetch --certs from t0: exit %d, stdout %q, stderr %q\nwant exit 2 and %q", code, stdout, stderr, want)
	}

	for _, sec := range [][]string{{"--insecure"}, {"--certs", certs}} {
		args := append([]string{"status", "--coordinator", t0.listen, "--timeout", "40s"}, sec...)
		start := time.Now()
		stdout, stderr, code := ddpmRun(t, c.bin, args...)
		want := "ddpm: status: " + t0.listen + " answers but serves no coordinator (a trainer's --listen address? use the coordinators' --grpc-addr)\n"
		if sec[0] == "--certs" {
			want = "ddpm: status: " + t0.listen + " serves gRPC in plain text (a coordinator or trainer started with --insecure) and this process uses --certs: give --insecure instead of --certs\n"
		}
		// 40 s is --timeout: a probe that did not pass through would wait it out.
		if took := time.Since(start); code != 2 || stdout != "" || stderr != want || took > 30*time.Second {
			t.Errorf("ddpm %s: exit %d after %v, stdout %q, stderr %q\nwant exit 2 at once and %q", strings.Join(args, " "), code, took.Round(time.Millisecond), stdout, stderr, want)
		}
	}

	// t1 goes with its volume; a new t1 on an empty one fetches the restart point from t0.
	t1.cmd.Process.Kill()
	<-t1.exited
	repl := c.trainer(t, "t1", "t1-new")
	final := finishProcs(t, c.cli, c.run, map[string]*trainerProc{"t0": t0, "new t1": repl})

	logb, err := os.ReadFile(repl.log)
	if err != nil {
		t.Fatal(err)
	}
	fetches := jsonRecords(logb, "fetching checkpoint")
	if len(fetches) == 0 || bytes.Contains(logb, []byte("checkpoint fetch still failing")) {
		t.Errorf("the new t1 fetched %d times (%v); its log:\n%s", len(fetches), fetches, logb)
	}
	if h0, h1 := finalStateS25(t, filepath.Join(c.dir, "t0"), steps), finalStateS25(t, filepath.Join(c.dir, "t1-new"), steps); h0 != h1 {
		t.Errorf("step-%d state: t0 %s, the new t1 %s", steps, h0, h1)
	}
	if m := final.Members["t1"]; m == nil || m.Address != repl.listen {
		t.Errorf("t1 at the end: %+v, want the new process at %s", m, repl.listen)
	}
}

// fetchedSHAS27 is the sha256 of step in the checkpoint file path.
func fetchedSHAS27(t *testing.T, path string, step int64) string {
	t.Helper()
	st, err := checkpoint.Open(path, checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	list, err := st.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Step == step {
			return e.SHA256
		}
	}
	t.Fatalf("%s holds no step %d: %+v", path, step, list)
	return ""
}
