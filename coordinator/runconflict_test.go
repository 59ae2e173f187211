package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
)

// runConfigs writes two valid run configs that differ in their step count and returns their
// paths and loaded runs.
func runConfigs(t *testing.T, dir string) (a, b string, ra, rb config.Run) {
	t.Helper()
	a, b = filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	for _, f := range []struct {
		path  string
		steps int
	}{{a, 100}, {b, 200}} {
		if err := os.WriteFile(f.path, fmt.Appendf(nil, "preset: mnist\nsteps: %d\n", f.steps), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if ra, err = config.Load(a); err != nil {
		t.Fatal(err)
	}
	if rb, err = config.Load(b); err != nil {
		t.Fatal(err)
	}
	return a, b, ra, rb
}

// waitLogMsg waits up to d for the process log at path to hold a line with message msg.
func waitLogMsg(t *testing.T, path, msg string, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if bytes.Contains(b, []byte(`"msg":"`+msg+`"`)) {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s: no %q line within %v:\n%s", path, msg, d, b)
		}
	}
}

// stopProc sends SIGTERM and waits for a clean exit.
func stopProc(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		b, _ := os.ReadFile(p.log)
		t.Fatalf("%v: exit %v after SIGTERM:\n%s", p.args, err, b)
	}
}

// runRefused runs the ddpm command line, which must exit 2 within 20s; it returns the last line
// of its stderr.
func runRefused(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("%v: exit %v, want 2; stderr:\n%s", args, err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	return lines[len(lines)-1]
}

// TestRestartWithOtherConfigRefused: a coordinator restarted on its data dir with another run
// config than the one its raft data holds exits 2 at once with one line naming both configs,
// the key in which they differ with both values (since stop 26) and the way out, leaving raft.db byte for byte as it was; it used to log the refusal at ERROR
// and go on serving the old run. Restarted with the run's own config it starts and serves.
func TestRestartWithOtherConfigRefused(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	a, b, ra, rb := runConfigs(t, dir)
	addrs := freeAddrs(t, 2)
	data := filepath.Join(dir, "data")
	args := func(cfg string) []string {
		return []string{"coordinator", "--insecure", "--id", "c0", "--raft-addr", addrs[0], "--grpc-addr", addrs[1],
			"--peers", "c0=" + addrs[0] + "=" + addrs[1], "--data-dir", data, "--bootstrap", "--config", cfg}
	}
	first := startProc(t, bin, filepath.Join(dir, "first.log"), args(a)...)
	waitLogMsg(t, first.log, "run config in force", 20*time.Second)
	stopProc(t, first)
	db := filepath.Join(data, "raft.db")
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}

	got := runRefused(t, bin, args(b)...)
	want := fmt.Sprintf("ddpm: coordinator: --data-dir %s runs config %.12s (preset mnist, model %s, dataset %s, 100 steps), "+
		"but --config %s is config %.12s (it has steps: 200 where the data dir has 100): restart it with that run's config, "+
		"or with a fresh --data-dir on every replica for a new run",
		data, ra.Hash(), ra.Model, ra.Dataset, b, rb.Hash())
	if got != want {
		t.Errorf("refusal\n%s\nwant\n%s", got, want)
	}
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, before) {
		t.Errorf("raft.db changed by the refused start (err %v)", err)
	}
	// The run flags name themselves when there is no file.
	got = runRefused(t, bin, append(args(a)[:len(args(a))-2], "--preset", "mnist", "--steps", "200")...)
	if want := fmt.Sprintf("but --preset mnist with the run flags is config %.12s (it has steps: 200 where the data dir has 100):", rb.Hash()); !strings.Contains(got, want) {
		t.Errorf("refusal %q does not say %q", got, want)
	}

	again := startProc(t, bin, filepath.Join(dir, "again.log"), args(a)...)
	waitLogMsg(t, again.log, "run config in force", 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if again.cmd.ProcessState != nil {
		t.Fatalf("restart with the run's own config exited")
	}
	stopProc(t, again)
}

// TestReplicaWithOtherConfigRefusedByCluster: a replica whose data dir is empty (a replaced
// volume) started with another run config than the cluster's learns the cluster's run from the
// leader and exits 2 with one line naming both configs and the key in which they differ, with
// both values (since stop 26: the line named only the hashes and the cluster's summary), while
// the others keep serving their run; started again with the cluster's config (its data dir now holding the log) it serves.
func TestReplicaWithOtherConfigRefusedByCluster(t *testing.T) {
	bin := ddpmBinary(t)
	dir := t.TempDir()
	a, b, ra, rb := runConfigs(t, dir)
	addrs := freeAddrs(t, 6)
	ids := []string{"c0", "c1", "c2"}
	var peers []string
	for i, id := range ids {
		peers = append(peers, fmt.Sprintf("%s=%s=%s", id, addrs[2*i], addrs[2*i+1]))
	}
	args := func(i int, cfg string) []string {
		return []string{"coordinator", "--insecure", "--id", ids[i], "--raft-addr", addrs[2*i], "--grpc-addr", addrs[2*i+1],
			"--peers", strings.Join(peers, ","), "--data-dir", filepath.Join(dir, ids[i]), "--bootstrap", "--config", cfg}
	}
	for i := range 2 {
		startProc(t, bin, filepath.Join(dir, ids[i]+".log"), args(i, a)...)
	}
	waitLogMsg(t, filepath.Join(dir, "c0.log"), "run config in force", 20*time.Second)

	got := runRefused(t, bin, args(2, b)...)
	want := fmt.Sprintf("ddpm: coordinator: the cluster runs config %.12s (preset mnist, model %s, dataset %s, 100 steps), "+
		"but --config %s is config %.12s (it has steps: 200 where the cluster has 100): no trainer has joined yet, so if the cluster's config is the mistake (the first replica "+
		"to start submits its own), stop every replica, empty their --data-dir and start them all with one config; "+
		"else start this replica with the cluster's run config",
		ra.Hash(), ra.Model, ra.Dataset, b, rb.Hash())
	if got != want {
		t.Errorf("refusal\n%s\nwant\n%s", got, want)
	}

	c2 := startProc(t, bin, filepath.Join(dir, "c2.log"), args(2, a)...)
	waitLogMsg(t, c2.log, "run config in force", 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial([]string{addrs[5]}, insecureBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if s, err := c.State(ctx); err != nil || s.ConfigHash != ra.Hash() {
		t.Fatalf("c2 serves config %v (err %v), want %.12s", s, err, ra.Hash())
	}
	stopProc(t, c2)
}

// TestRunConflictMessage: a refusal by a cluster whose run has started (a trainer joined) asks for
// the cluster's config; one by a fresh cluster (no join, no step), whose config may be the typo
// of the replica that started first, also says how to start over with one config.
func TestRunConflictMessage(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	e := &RunConflictError{Where: "the cluster", InForce: &run, InForceHash: "0123456789abcdef", Given: "--config b.yaml", GivenHash: "fedcba9876543210"}
	head := "coordinator: the cluster runs config 0123456789ab (preset mnist, model " + run.Model + ", dataset " + run.Dataset +
		", " + fmt.Sprint(run.Steps) + " steps), but --config b.yaml is config fedcba987654: "
	if got, want := e.Error(), head+"start this replica with the cluster's run config (every replica needs the same one)"; got != want {
		t.Errorf("started run:\n%s\nwant\n%s", got, want)
	}
	e.Fresh = true
	if got, want := e.Error(), head+"no trainer has joined yet, so if the cluster's config is the mistake (the first replica to start "+
		"submits its own), stop every replica, empty their --data-dir and start them all with one config; "+
		"else start this replica with the cluster's run config"; got != want {
		t.Errorf("fresh run:\n%s\nwant\n%s", got, want)
	}
}
