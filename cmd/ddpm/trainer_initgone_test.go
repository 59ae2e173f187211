package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// TestTrainerResumesWithInitGone: a standalone trainer started with --init weights is stopped
// (SIGTERM) after its first checkpoint; the weights file is then moved away, and the same
// command resumes the run from its committed checkpoint and finishes it, saying at info level
// that the weights are gone. Its final checkpoint still records the run's start (the moved
// weights' sha256, trainer.InitSHA256), so sample's EMA warning still knows the run was warm
// started. Before, the trainer read the weights at every start and exited 2 without them
// ("trainer: --init W: unet: reading W: safetensors: open W: no such file or directory"): a
// Kubernetes pod whose --init file had moved crash-looped. A new volume still needs them: the
// same command on an empty volume exits 2 with that line, and writes no checkpoint file.
func TestTrainerResumesWithInitGone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	demo, err := os.ReadFile(filepath.Join("..", "..", "demo", "mnist-tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	w, moved := filepath.Join(root, "w.safetensors"), filepath.Join(root, "moved.safetensors")
	if err := os.WriteFile(w, demo, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const steps = 12
	trainerCmd := func(vol string) (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.CommandContext(ctx, bin, "trainer", "--standalone", "--preset", "mnist", "--steps", fmt.Sprint(steps),
			"--checkpoint-every", "2", "--global-batch", "4", "--t", "20", "--data-dir", vol, "--init", w)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		return cmd, &stderr
	}
	vol := filepath.Join(root, "vol")

	// First start: stopped once its first checkpoint is saved.
	first, firstErr := trainerCmd(vol)
	out, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var log1 strings.Builder
	for sc.Scan() {
		log1.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), `"msg":"checkpoint saved"`) {
			if err := first.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	_, _ = io.Copy(&log1, out)
	if err := first.Wait(); err != nil {
		t.Fatalf("first start: %v\nstderr:\n%s\nlog:\n%s", err, firstErr, log1.String())
	}
	st, err := checkpoint.Open(filepath.Join(vol, trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.LatestCommitted()
	st.Close()
	if err != nil {
		t.Fatalf("no committed checkpoint after the first start: %v\nlog:\n%s", err, log1.String())
	}
	if c.Step >= steps {
		t.Fatalf("the first start ran to step %d, the run's end: nothing left to resume", c.Step)
	}
	want := initWeightsSHA(t, w)
	if err := os.Rename(w, moved); err != nil {
		t.Fatal(err)
	}

	// Second start, the weights gone: resumes from step c.Step and finishes.
	second, secondErr := trainerCmd(vol)
	var log2 bytes.Buffer
	second.Stdout = &log2
	if err := second.Run(); err != nil {
		t.Fatalf("resume without the --init file (committed step %d): %v\nstderr:\n%s\nlog:\n%s", c.Step, err, secondErr, log2.String())
	}
	if msg := `"level":"INFO","msg":"the --init weights are gone; a committed checkpoint of the run holds everything they gave it`; !strings.Contains(log2.String(), msg) {
		t.Errorf("no %q line in the resumed trainer's log:\n%s", msg, log2.String())
	}
	st, err = checkpoint.Open(filepath.Join(vol, trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	final, err := st.LatestCommitted()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if final.Step != steps || trainer.InitSHA256(final.RNG) != want {
		t.Fatalf("final committed checkpoint: step %d, start record %q; want step %d recording %s", final.Step, final.RNG, steps, want)
	}

	// A new volume starts from the weights: refused, status 2, one line, no checkpoint file.
	fresh := filepath.Join(root, "fresh")
	third, thirdErr := trainerCmd(fresh)
	err = third.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("new volume without the --init file: %v, want exit status 2\nstderr:\n%s", err, thirdErr)
	}
	line := fmt.Sprintf("ddpm: trainer: --init %s: unet: reading %s: safetensors: open %s: no such file or directory\n", w, w, w)
	if thirdErr.String() != line {
		t.Errorf("stderr %q, want %q", thirdErr.String(), line)
	}
	if _, err := os.Stat(filepath.Join(fresh, trainer.CheckpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused trainer left %s (%v)", trainer.CheckpointFile, err)
	}
}

// TestClusterTrainerJoinsWithInitGone: t0 and ta, given --init weights, start a cluster run that
// needs two trainers; after its first commit ta stops, the weights file is moved away, and t1
// joins with the same --init flag (a new pod of the same spec) and an empty volume: it takes the
// run's committed checkpoint from t0, trains in the ring with it, and the run finishes, t1's
// final checkpoint recording the run's start (the moved weights' sha256). Before, t1 exited 2
// at start-up ("trainer: --init W: ...: no such file or directory") and a StatefulSet
// restarted it on the same line forever.
func TestClusterTrainerJoinsWithInitGone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	w := demoWeightsIn(t, dir)
	want := initWeightsSHA(t, w)
	run, cfg := procRun(t, dir, 32, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainer(t, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs, "--init", w)
	ta := launchTrainer(t, bin, filepath.Join(dir, "ta-vol"), "ta", freeAddr(t), coord, cfg, certs, "--init", w)
	waitFor(t, cli, "the first commit", 2*time.Minute, func(s *fsm.State) bool { return len(s.Checkpoints) > 0 })
	if err := ta.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ta.exited:
		if ta.err != nil {
			t.Fatalf("ta stopped: %v; stderr:\n%s", ta.err, ta.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ta did not stop within 30 s of SIGTERM")
	}
	if err := os.Rename(w, filepath.Join(dir, "moved.safetensors")); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "t1-vol")
	t1 := launchTrainer(t, bin, vol, "t1", freeAddr(t), coord, cfg, certs, "--init", w)
	finishWith(t, cli, run, t0, t1)
	b, err := os.ReadFile(t1.log)
	if err != nil {
		t.Fatal(err)
	}
	if msg := `"level":"INFO","msg":"the --init weights are gone;`; !strings.Contains(string(b), msg) || !strings.Contains(string(b), `"msg":"fetching checkpoint"`) {
		t.Fatalf("t1's log has no %q line or did not fetch the run's checkpoint:\n%s", msg, b)
	}
	st, err := checkpoint.Open(filepath.Join(vol, trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.LatestCommitted()
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if c.Step != run.Steps || trainer.InitSHA256(c.RNG) != want {
		t.Fatalf("t1's newest committed checkpoint: step %d, start record %q; want step %d recording %s", c.Step, c.RNG, run.Steps, want)
	}
}

// demoWeightsIn copies the demo's initial weights (demo/mnist-tiny.safetensors, the mnist
// preset's tiny model) to DIR/w.safetensors, a --init file a test may move or remove, and
// returns its path.
func demoWeightsIn(t *testing.T, dir string) string {
	t.Helper()
	demo, err := os.ReadFile(filepath.Join("..", "..", "demo", "mnist-tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(dir, "w.safetensors")
	if err := os.WriteFile(w, demo, 0o644); err != nil {
		t.Fatal(err)
	}
	return w
}
