package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// nuRun runs the built binary with args and returns its stdout, its stderr and its exit status.
func nuRun(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(testutil.DDPMBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ddpm %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// nuWant checks that the binary run with args exits with code and writes exactly want (one
// line) to stderr.
func nuWant(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	_, stderr, got := nuRun(t, args...)
	if got != code || stderr != want+"\n" {
		t.Errorf("ddpm %s: exit %d\n%s\nwant exit %d\n%s", strings.Join(args, " "), got, stderr, code, want)
	}
}

// stoppedRunFixture writes a stopped ddpm local run folder: evalFixture's run.yaml and
// trainer-0/checkpoints.db (a real step-0 checkpoint of the mnist preset), local.json with one
// coordinator on a free port and one trainer, and the run's certificates (ddpm certs init).
func stoppedRunFixture(t *testing.T) (dir, grpc string) {
	t.Helper()
	dir, _ = evalFixture(t)
	m, err := localrun.NewManifest(fixtureRun.Hash(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := localrun.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := nuRun(t, "certs", "init", filepath.Join(dir, localrun.CertsDir)); code != 0 {
		t.Fatalf("certs init: exit %d: %s", code, stderr)
	}
	return dir, m.CoordinatorGRPC()[0]
}

// TestNewUserS24StoppedRunFolder: ddpm status RUN and ddpm loss RUN of a ddpm local run that
// is not going say so in one line (exit 1): where its checkpoints or its loss history are read
// instead, and --resume for one that has not finished (a finished one: the step it finished
// at, and no --resume, which would only say "nothing to resume"). Both said "nothing listens at
// ADDR (connection refused): no coordinator runs there, or not yet (--coordinator takes a
// coordinator's --grpc-addr)", naming a flag the command line did not give.
func TestNewUserS24StoppedRunFolder(t *testing.T) {
	dir, grpc := stoppedRunFixture(t)
	csv := filepath.Join(dir, localrun.LossCSV)
	stopped := "the ddpm local run " + dir + " is not running (nothing listens at its coordinators " + grpc + "): "
	resume := "; ddpm local --resume " + dir + " starts it again"
	nuWant(t, 1, "ddpm: status: "+stopped+"ddpm checkpoint list "+dir+" lists its checkpoints"+resume, "status", dir)
	nuWant(t, 1, "ddpm: loss: "+stopped+"it has no loss history yet (no "+csv+")"+resume, "loss", dir)
	if err := os.WriteFile(csv, []byte("step,loss,lr,grad_norm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 1, "ddpm: loss: "+stopped+"its loss history is in "+csv+resume, "loss", dir, "--follow")

	// Finished: trainer-0 holds the committed checkpoint of the run's last step.
	last := finishFixture(t, dir)
	finished := "the ddpm local run " + dir + " finished at step " + strconv.FormatInt(last, 10) + " and is not running (nothing listens at its coordinators " + grpc + "): "
	nuWant(t, 1, "ddpm: status: "+finished+"ddpm checkpoint list "+dir+" lists its checkpoints", "status", dir)
	nuWant(t, 1, "ddpm: loss: "+finished+"its loss history is in "+csv, "loss", dir)
	// RUN/run.yaml gone: the trainer's copy beside its checkpoints tells the run's steps.
	if err := os.Rename(filepath.Join(dir, localrun.ConfigFile), filepath.Join(dir, "trainer-0", trainer.ConfigFile)); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 1, "ddpm: status: "+finished+"ddpm checkpoint list "+dir+" lists its checkpoints", "status", dir)
}

// TestNewUserS24InUseStatusHint: the line of a checkpoint file a trainer of a ddpm local run
// holds names the committed steps' list as ddpm status RUN, which takes the run folder since
// d5d6c58; it gave the long --coordinator ADDR,... --certs RUN/certs form.
func TestNewUserS24InUseStatusHint(t *testing.T) {
	dir, _ := stoppedRunFixture(t)
	m, err := localrun.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "trainer-0", trainer.CheckpointFile)
	st, err := checkpoint.Open(file, checkpoint.Options{}) // this test process is the holder
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want := "ddpm: checkpoint: " + file + " in use by process " + strconv.Itoa(os.Getpid()) + " (trainer-0 of the ddpm local run " + dir +
		": copy a committed checkpoint out of it with: ddpm checkpoint fetch " + localrun.Addr(m.TrainerPorts[0].Listen) + " --certs " + filepath.Join(dir, "certs") +
		" --step N --out " + filepath.Join(dir, "step-N.db") + ", N a committed step that ddpm status " + dir + " lists)"
	nuWant(t, 2, want, "checkpoint", "list", dir)
}

// TestNewUserS24FetchFromFolder: checkpoint fetch given a ddpm local run folder (or any file)
// as ADDR, or a string that is not host:port, is refused in one line, exit status 2, nothing
// written: a running run's line is the fetch command for its first trainer, a stopped run's
// says to read the folder itself. They said "rpc error: code = Unavailable desc = name
// resolver error: produced zero addresses", exit 1 (or first asked for --certs).
func TestNewUserS24FetchFromFolder(t *testing.T) {
	dir, _ := stoppedRunFixture(t)
	m, err := localrun.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, localrun.CertsDir)
	out := filepath.Join(t.TempDir(), "copy.db")
	nuWant(t, 2, "ddpm: checkpoint fetch: "+dir+" is a ddpm local run folder that is not running (its trainers serve no copy): read its checkpoints there, as ddpm checkpoint list "+dir+" does",
		"checkpoint", "fetch", dir, "--certs", certs, "--step", "0", "--out", out)
	yaml := filepath.Join(dir, localrun.ConfigFile)
	nuWant(t, 2, "ddpm: checkpoint fetch: "+yaml+" is a file, not a trainer's address (host:port, its --listen)",
		"checkpoint", "fetch", yaml, "--certs", certs, "--step", "0", "--out", out)
	nuWant(t, 2, "ddpm: checkpoint fetch: ADDR trainer-0: not a host:port address (missing port in address); give a trainer's --listen address",
		"checkpoint", "fetch", "trainer-0", "--insecure", "--step", "0", "--out", out)
	lock, err := localrun.Lock(dir) // this test process runs the run
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	nuWant(t, 2, "ddpm: checkpoint fetch: "+dir+" is a ddpm local run folder, not a trainer's address: ddpm checkpoint fetch "+localrun.Addr(m.TrainerPorts[0].Listen)+" --certs "+certs+" --step N --out FILE copies from its trainer-0",
		"checkpoint", "fetch", dir, "--step", "0", "--out", out)
	mustNotExist(t, out)
}

// TestNewUserS24NoCheckpointYet: sample, eval bpd and checkpoint export of a ddpm local run
// interrupted before its first checkpoint (trainer-0's file holds none) say that the run has
// none yet and when its trainers write the first, exit status 2; checkpoint list says it without
// an empty table's header. They said "F holds no verified checkpoint: checkpoint not found", as
// if its checkpoints were damaged, and list printed the header over "RUN holds no checkpoints".
// A file outside a run folder says "holds no checkpoint yet" too.
func TestNewUserS24NoCheckpointYet(t *testing.T) {
	dir, _ := stoppedRunFixture(t)
	file := filepath.Join(dir, "trainer-0", trainer.CheckpointFile)
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(file, checkpoint.Options{}) // as a trainer leaves it before step 50
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	yaml := filepath.Join(dir, localrun.ConfigFile)
	every := strconv.FormatInt(fixtureRun.CheckpointEvery, 10)
	want := "ddpm: checkpoint " + dir + ": a ddpm local run without a checkpoint yet (its trainers write the first at step " + every +
		", checkpoint_every of " + yaml + "; ddpm local --resume " + dir + " trains on when the run is stopped)"
	out := filepath.Join(t.TempDir(), "x")
	nuWant(t, 2, want, "sample", "--checkpoint", dir, "--n", "1", "--out", out+".png")
	nuWant(t, 2, want, "eval", "bpd", "--checkpoint", dir, "--n", "1")
	nuWant(t, 2, want, "checkpoint", "export", dir, "--out", out+".safetensors")
	stdout, stderr, code := nuRun(t, "checkpoint", "list", dir)
	if want := dir + " holds no checkpoint yet (its trainers write the first at step " + every + ", checkpoint_every of " + yaml + ")\n"; code != 0 || stdout != want || stderr != "" {
		t.Errorf("checkpoint list %s: exit %d, stdout %q, stderr %q; want exit 0, stdout %q", dir, code, stdout, stderr, want)
	}
	// Outside a run folder.
	lone := filepath.Join(t.TempDir(), "c.db")
	if err := os.Rename(file, lone); err != nil {
		t.Fatal(err)
	}
	nuWant(t, 2, "ddpm: checkpoint: "+lone+" holds no checkpoint yet", "checkpoint", "export", lone, "--out", out+".safetensors")
	// A trainer's --data-dir (a standalone trainer stopped before its first checkpoint): list
	// names its run.yaml's checkpoint_every.
	vol := filepath.Dir(lone)
	if err := os.Rename(lone, filepath.Join(vol, trainer.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vol, trainer.ConfigFile), fixtureRun.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, _, code = nuRun(t, "checkpoint", "list", vol)
	if want := vol + " holds no checkpoint yet (its trainer writes the first at step " + every + ", checkpoint_every of " + filepath.Join(vol, trainer.ConfigFile) + ")\n"; code != 0 || stdout != want {
		t.Errorf("checkpoint list %s: exit %d, stdout %q; want exit 0, %q", vol, code, stdout, want)
	}
	mustNotExist(t, out+".png")
	mustNotExist(t, out+".safetensors")
}

// TestNewUserS24RunFolderOverEnv: ddpm status RUN with DDPM_INSECURE=true in the environment
// (left from another cluster) uses the run's certificates: the run folder on the command line
// decides, as a flag would. It was "tlsauth: choose TLS (--certs DIR) or plain text
// (--insecure): --insecure and --certs RUN/certs exclude each other", exit 2, two flags the
// command line did not give.
func TestNewUserS24RunFolderOverEnv(t *testing.T) {
	dir, grpc := stoppedRunFixture(t)
	cmd := exec.Command(testutil.DDPMBinary(t), "status", dir)
	cmd.Env = append(os.Environ(), "DDPM_INSECURE=true")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	want := "ddpm: status: the ddpm local run " + dir + " is not running (nothing listens at its coordinators " + grpc + "): ddpm checkpoint list " + dir +
		" lists its checkpoints; ddpm local --resume " + dir + " starts it again\n"
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || stderr.String() != want {
		t.Errorf("DDPM_INSECURE=true ddpm status %s: %v\n%s\nwant exit 1\n%s", dir, err, stderr.String(), want)
	}
}

// finishFixture saves into the fixture run dir's trainer-0 file the committed checkpoint of the
// run's last step (its run.yaml's steps), as a finished run leaves it, and returns that step.
func finishFixture(t *testing.T, dir string) int64 {
	t.Helper()
	st, err := checkpoint.Open(filepath.Join(dir, "trainer-0", trainer.CheckpointFile), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	last := *fixtureCkpt
	last.Step = fixtureRun.Steps
	if _, err := st.Save(&last); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkCommitted(last.Step); err != nil {
		t.Fatal(err)
	}
	if run, err := config.Load(filepath.Join(dir, localrun.ConfigFile)); err != nil || run.Steps != last.Step {
		t.Fatalf("run.yaml: %v, steps %d", err, run.Steps)
	}
	return last.Step
}

// TestNewUserS24RollbackFinished: ddpm checkpoint rollback RUN of a ddpm local run that
// finished says that a finished run is not rolled back and how to train again from one of its
// steps, exit status 2. It advised "start it (ddpm local --resume RUN), then: ddpm checkpoint
// rollback --coordinator ...", but that --resume starts nothing for a finished run and its
// coordinators refuse to roll one back.
func TestNewUserS24RollbackFinished(t *testing.T) {
	dir, _ := stoppedRunFixture(t)
	last := finishFixture(t, dir)
	finished := "ddpm: checkpoint rollback: the ddpm local run " + dir + " finished at step " + strconv.FormatInt(last, 10) + ", and a finished run is not rolled back; "
	nuWant(t, 2, finished+"to train again from a step M, export its weights (ddpm checkpoint export "+dir+
		" --step M --out W.safetensors) and start a new run from them (ddpm local --init W.safetensors --out NEW)",
		"checkpoint", "rollback", dir)
	// The step given is put in the commands (review N3), or the steps held named.
	w := dir + "-step0.safetensors"
	nuWant(t, 2, finished+"to train again from step 0, export its weights (ddpm checkpoint export "+dir+" --step 0 --out "+w+
		") and start a new run from them (ddpm local --init "+w+" --out NEW)", "checkpoint", "rollback", dir, "--to-step", "0")
	nuWant(t, 2, finished+dir+" holds no checkpoint of step 7 (it holds steps 0, "+strconv.FormatInt(last, 10)+")", "checkpoint", "rollback", dir, "--to-step", "7")
}
