package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
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
	"ddpm/unet"
)

// TestSampleEMAWarningInitTrainer: a standalone trainer given --init records the weights in its
// volume (init.txt: their absolute path), and `ddpm sample` of its step-2 checkpoint does not
// call the EMA a random start; the volume of a trainer without --init has no record and gets
// the warning once. Before, sample looked only for a ddpm local run's local.json and warned of
// both volumes alike ("from a random start they draw mostly noise"), though the first one's
// EMA is mostly the --init weights.
func TestSampleEMAWarningInitTrainer(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	init, err := filepath.Abs(filepath.Join("..", "..", "demo", "mnist-tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	train := func(vol string, extra ...string) {
		args := append([]string{"trainer", "--standalone", "--preset", "mnist", "--steps", "2", "--checkpoint-every", "1",
			"--global-batch", "4", "--t", "20", "--data-dir", vol}, extra...)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	warning := "ddpm sample: warning: the EMA weights of step 2 (ema_decay 0.999) still hold 100% of the step-0 weights (0.999^2); from a random start they draw mostly noise: give --raw to sample the raw parameters\n"
	for _, c := range []struct {
		name string
		args []string
		want int
	}{{"warm", []string{"--init", init}, 0}, {"cold", nil, 1}} {
		vol := filepath.Join(root, c.name)
		train(vol, c.args...)
		rec, err := os.ReadFile(filepath.Join(vol, trainer.InitFile))
		if c.want == 0 && (err != nil || string(rec) != init+"\n") {
			t.Fatalf("%s: %s: %q, %v; want %q", c.name, trainer.InitFile, rec, err, init+"\n")
		}
		if c.want == 1 && !os.IsNotExist(err) {
			t.Fatalf("%s: %s: %q, %v; want none", c.name, trainer.InitFile, rec, err)
		}
		var stderr bytes.Buffer
		if _, err := runCLI(t, ctx, &stderr, "sample", "--checkpoint", vol, "--n", "1", "--out", filepath.Join(root, c.name+".png")); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(stderr.String(), warning); n != c.want {
			t.Errorf("%s: the warning %d times, want %d, in:\n%s", c.name, n, c.want, stderr.String())
		}
		if done := " step 2 (EMA) in "; !strings.Contains(stderr.String(), done) {
			t.Errorf("%s: no %q in:\n%s", c.name, done, stderr.String())
		}
	}
}

// TestSampleEMAWarningLateJoiner: t0 and ta, both given --init weights, start a cluster run
// that needs two trainers (min_trainers 2); after its first commit ta stops, and t1 joins
// without --init: it fetches the run's committed checkpoint, trains in the ring with t0, and
// the run finishes. t1's volume has no init.txt (t1 was given no weights), yet its final
// checkpoint records the run's start (the --init weights' sha256, trainer.InitSHA256), and
// `ddpm sample` of it does not call its EMA a random start. It used to warn: "the EMA weights
// of step 32 ... still hold 97% of the step-0 weights (0.999^32); from a random start they
// draw mostly noise".
func TestSampleEMAWarningLateJoiner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts trainer processes")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	init, err := filepath.Abs(filepath.Join("..", "..", "demo", "mnist-tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	run, cfg := procRun(t, dir, 32, 2, 2, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	t0 := launchTrainer(t, bin, filepath.Join(dir, "t0-vol"), "t0", freeAddr(t), coord, cfg, certs, "--init", init)
	ta := launchTrainer(t, bin, filepath.Join(dir, "ta-vol"), "ta", freeAddr(t), coord, cfg, certs, "--init", init)
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
	vol := filepath.Join(dir, "t1-vol")
	t1 := launchTrainer(t, bin, vol, "t1", freeAddr(t), coord, cfg, certs)
	finishWith(t, cli, run, t0, t1)
	b, err := os.ReadFile(t1.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"msg":"fetching checkpoint"`) {
		t.Fatalf("t1 did not fetch the run's checkpoint; its log:\n%s", b)
	}

	if _, err := os.Stat(filepath.Join(vol, trainer.InitFile)); !os.IsNotExist(err) {
		t.Fatalf("t1's volume has %s (%v): t1 was given no --init", trainer.InitFile, err)
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
	if c.Step != run.Steps || trainer.InitSHA256(c.RNG) != initWeightsSHA(t, init) {
		t.Fatalf("t1's newest committed checkpoint: step %d, start record %q; want step %d recording %s", c.Step, c.RNG, run.Steps, initWeightsSHA(t, init))
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	if _, err := runCLI(t, ctx, &stderr, "sample", "--checkpoint", vol, "--n", "1", "--out", filepath.Join(dir, "t1.png")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "ddpm sample: warning: the EMA weights") {
		t.Errorf("sample of the later joiner's volume warns of a random start:\n%s", stderr.String())
	}
	if done := fmt.Sprintf(" step %d (EMA) in ", run.Steps); !strings.Contains(stderr.String(), done) {
		t.Errorf("no %q in:\n%s", done, stderr.String())
	}
}

// initWeightsSHA is the sha256 (hex) of the little-endian float32 parameters of the mnist
// preset's model that the safetensors file path holds.
func initWeightsSHA(t *testing.T, path string) string {
	t.Helper()
	ucfg, err := unet.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m, err := unet.New(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	w := make([]float32, len(m.Params()))
	if _, err := unet.ReadSafetensors(path, m.Tensors(), w); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := binary.Write(h, binary.LittleEndian, w); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
