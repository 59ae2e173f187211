package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/dataset"
	"ddpm/trainer"
)

// The command-line checks of sample, eval, checkpoint export, dataset, status and loss: every
// bad input is one line and exit status 2, before any work and without touching a file.

// resetFlags puts every flag of the command tree back to its default and forgets the context
// of the last run, so that one test's command line does not leak into the next (cobra parses
// into the same variables each run, and hands a command the root's context only when it has
// none).
func resetFlags(c *cobra.Command) {
	if c != rootCmd {
		c.SetContext(nil) // nil: take the root's at the next Execute
	}
	reset := func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			_ = sv.Replace(nil)
		} else {
			_ = f.Value.Set(f.DefValue)
		}
		f.Changed = false
	}
	c.Flags().VisitAll(reset)
	c.PersistentFlags().VisitAll(reset)
	for _, sub := range c.Commands() {
		resetFlags(sub)
	}
}

// runCLI runs the command line through runDDPM with every flag at its default, stderr into
// stderr (nil: discarded) and ctx as the command's context; it returns stdout.
func runCLI(t *testing.T, ctx context.Context, stderr io.Writer, args ...string) (string, error) {
	t.Helper()
	configureRoot()
	resetFlags(rootCmd)
	if stderr == nil {
		stderr = io.Discard
	}
	rootCmd.SetErr(stderr)
	rootCmd.SetContext(ctx)
	defer func() {
		rootCmd.SetErr(nil)
		rootCmd.SetContext(context.Background())
		resetFlags(rootCmd)
	}()
	return runDDPM(t, args...)
}

// wantExit checks that err is exit status code with exactly the message want.
func wantExit(t *testing.T, args []string, err error, code int, want string) {
	t.Helper()
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != code || err.Error() != want {
		t.Errorf("ddpm %s:\n got %v\nwant exit %d %q", strings.Join(args, " "), err, code, want)
	}
}

// fixtureT is the fixture run's diffusion steps: few, so that sampling it takes milliseconds.
const fixtureT = 20

var (
	fixtureOnce sync.Once
	fixtureRun  config.Run
	fixtureCkpt *checkpoint.Checkpoint
	fixtureErr  error
)

// evalFixture writes a run folder as ddpm local leaves it (run.yaml, trainer-0/checkpoints.db
// holding a real step-0 checkpoint of the mnist preset's tiny U-Net, T = fixtureT) and returns
// the folder and the checkpoint file.
func evalFixture(t *testing.T) (dir, file string) {
	t.Helper()
	fixtureOnce.Do(func() {
		run, err := config.Preset("mnist")
		if err != nil {
			fixtureErr = err
			return
		}
		run.T = fixtureT
		ds, err := dataset.Open(run.Dataset, dataset.Options{})
		if err != nil {
			fixtureErr = err
			return
		}
		tr, err := trainer.New(run, ds)
		if err != nil {
			fixtureErr = err
			return
		}
		fixtureRun, fixtureCkpt = run, tr.Snapshot(0, "")
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	dir = t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, trainer.ConfigFile), fixtureRun.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(dir, "trainer-0", trainer.CheckpointFile)
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Save(fixtureCkpt); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (stat: %v), want nothing written", path, err)
	}
}

// TestSampleGridCap: --n beyond what one PNG grid holds (2^28 pixels of 32x32 tiles: 262144)
// is refused before anything is allocated; so is a --progressive grid of --n rows of T/every+1
// tiles beyond it, and an interpolation row beyond it.
func TestSampleGridCap(t *testing.T) {
	dir, _ := evalFixture(t)
	out := filepath.Join(t.TempDir(), "x.png")
	missing := filepath.Join(t.TempDir(), "a.png")
	// A PNG header that declares 20000x20000 pixels: refused from its header, never decoded.
	big := filepath.Join(t.TempDir(), "big.png")
	var hdr bytes.Buffer
	hdr.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := []byte{'I', 'H', 'D', 'R', 0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20, 8, 2, 0, 0, 0}
	hdr.Write([]byte{0, 0, 0, 13})
	hdr.Write(ihdr)
	crc := crc32.ChecksumIEEE(ihdr)
	hdr.Write([]byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	if err := os.WriteFile(big, hdr.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--n", "10000000"}, "--n 10000000: at most 262144 images of 32x32 fit one grid (2^28 pixels)"},
		{[]string{"--n", "262145"}, "--n 262145: at most 262144 images of 32x32 fit one grid (2^28 pixels)"},
		{[]string{"--n", "100000", "--progressive", out + ".p.png", "--every", "1"},
			"--progressive with --every 1: at most 12483 rows of 21 images of 32x32 fit one grid (2^28 pixels), not --n 100000"},
		{[]string{"--interpolate", missing + "," + missing, "--lambda-steps", "300000"},
			"--lambda-steps 300000: at most 262141 fit one grid of 32x32 images (2^28 pixels)"},
		{[]string{"--interpolate", missing + "," + missing, "--interpolate-t", "10"}, "--interpolate image " + missing + " does not exist"},
		{[]string{"--interpolate", big + "," + big, "--interpolate-t", "10"}, "--interpolate image " + big + " is 20000x20000, the model wants 32x32"},
	} {
		args := append([]string{"sample", "--checkpoint", dir, "--out", out}, tc.args...)
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, out)
	}
	if err := checkGridCount("--samples", 4096, 256, 256); err != nil {
		t.Errorf("4096 images of 256x256: %v", err)
	}
	err := checkGridCount("--samples", 4097, 256, 256)
	wantExit(t, []string{"checkGridCount"}, err, 2, "--samples 4097: at most 4096 images of 256x256 fit one grid (2^28 pixels)")
}

// TestOutputIsAnInput: an output that is one of the command's inputs (the checkpoint, under its
// own name or a hard link, a dataset folder's file) is refused with or without --force, naming
// both, and the input is left as it was; two outputs naming one file are refused too.
func TestOutputIsAnInput(t *testing.T) {
	dir, file := evalFixture(t)
	// As ddpm local leaves a run: a run.yaml in the run folder and in the trainer's; sample reads
	// the trainer's and may replace neither.
	trainerCfg := filepath.Join(dir, "trainer-0", trainer.ConfigFile)
	if err := os.WriteFile(trainerCfg, fixtureRun.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := fileSum(t, file)
	link := filepath.Join(t.TempDir(), "link.db")
	if err := os.Link(file, link); err != nil {
		t.Fatal(err)
	}
	imgs := t.TempDir()
	img := filepath.Join(imgs, "a.png")
	if err := os.WriteFile(img, []byte("not a png"), 0o644); err != nil {
		t.Fatal(err)
	}
	png := filepath.Join(t.TempDir(), "x.png")
	same := "the same file as the checkpoint " + file + ", an input; nothing was written"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", file, "--force"}, "--out " + file + " is " + same},
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", file}, "--out " + file + " is " + same},
		{[]string{"sample", "--checkpoint", dir, "--out", png, "--export-weights", link, "--force"}, "--export-weights " + link + " is " + same},
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", filepath.Join(dir, "run.yaml"), "--force"},
			"--out " + filepath.Join(dir, "run.yaml") + " is the same file as the run config " + filepath.Join(dir, "run.yaml") + ", an input; nothing was written"},
		{[]string{"sample", "--checkpoint", file, "--n", "1", "--out", trainerCfg, "--force"},
			"--out " + trainerCfg + " is the same file as the run config " + trainerCfg + ", an input; nothing was written"},
		{[]string{"sample", "--checkpoint", dir, "--out", png, "--progressive", png}, "--out " + png + " and --progressive " + png + " are the same file"},
		{[]string{"checkpoint", "export", dir, "--out", file, "--force"}, "checkpoint export: --out " + file + " is " + same},
		{[]string{"checkpoint", "export", file, "--out", link, "--force"}, "checkpoint export: --out " + link + " is " + same},
		{[]string{"dataset", "inspect", imgs, "--preview", img, "--force"}, "--preview " + img + " is inside the dataset " + imgs + ", an input; nothing was written"},
		{[]string{"loss", "--coordinator", "127.0.0.1:1", "--png", png, "--csv", png}, "loss: --png " + png + " and --csv " + png + " are the same file"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	if fileSum(t, file) != sum {
		t.Errorf("%s changed", file)
	}
	if b, err := os.ReadFile(img); err != nil || string(b) != "not a png" {
		t.Errorf("%s: %q, %v", img, b, err)
	}
	mustNotExist(t, png)
}

// TestDatasetFlagBounds: --resolution beyond 1024 (and below 0), a --split other than train or
// test, a --split that contradicts the spec's and a --shard-mb out of range are one line each,
// exit 2, before any data is read.
func TestDatasetFlagBounds(t *testing.T) {
	out := filepath.Join(t.TempDir(), "prepared")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dataset", "inspect", "mnist", "--resolution", "100000"}, "--resolution 100000: want 1..1024 (or 0, the format's default)"},
		{[]string{"dataset", "inspect", "mnist", "--resolution", "-1"}, "--resolution -1: want 1..1024 (or 0, the format's default)"},
		{[]string{"dataset", "prepare", "mnist", "--out", out, "--resolution", "1025"}, "--resolution 1025: want 1..1024 (or 0, the format's default)"},
		{[]string{"dataset", "inspect", "mnist:test", "--split", "train"}, "--split train conflicts with the split in mnist:test"},
		{[]string{"dataset", "inspect", "mnist", "--split", "val"}, "--split val: want train or test"},
		{[]string{"dataset", "prepare", "mnist", "--out", out, "--shard-mb", "0"}, "dataset prepare: --shard-mb 0: want 1..65536"},
		{[]string{"dataset", "prepare", "mnist", "--out", out, "--shard-mb", "9007199254740993"}, "dataset prepare: --shard-mb 9007199254740993: want 1..65536"},
		{[]string{"dataset", "prepare", "mnist"}, "dataset prepare: --out DIR is required"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	// A resolution the format cannot honour is the dataset package's message, and bad input (2).
	_, err := runCLI(t, context.Background(), nil, "dataset", "inspect", "mnist", "--resolution", "29")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 2 || !errors.Is(err, dataset.ErrOption) || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("dataset inspect mnist --resolution 29: %v, want one line, exit 2, dataset.ErrOption", err)
	}
	mustNotExist(t, out)
}

// TestEvalInputMessages: sample and eval name a missing checkpoint as missing, a --model the
// checkpoint is not as such (no Go package text), an absent --step, and a --split that
// contradicts --data's.
func TestEvalInputMessages(t *testing.T) {
	dir, file := evalFixture(t)
	out := filepath.Join(t.TempDir(), "x.png")
	missing := filepath.Join(t.TempDir(), "missing.safetensors")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--checkpoint", missing, "--out", out}, "--checkpoint " + missing + " does not exist"},
		{[]string{"eval", "bpd", "--checkpoint", missing}, "--checkpoint " + missing + " does not exist"},
		// The missing checkpoint is named, not the existing --out.
		{[]string{"checkpoint", "export", missing, "--out", file}, "checkpoint file " + missing + " does not exist"},
		{[]string{"sample", "--checkpoint", dir, "--model", "cifar10", "--out", out},
			"--model cifar10: " + file + " belongs to a run of model tiny (" + filepath.Join(dir, "run.yaml") + ")"},
		{[]string{"eval", "bpd", "--checkpoint", dir, "--model", "cifar10"},
			"--model cifar10: " + file + " belongs to a run of model tiny (" + filepath.Join(dir, "run.yaml") + ")"},
		{[]string{"sample", "--checkpoint", dir, "--step", "7", "--out", out},
			"--step 7: " + file + " holds no checkpoint of that step (it holds step 0)"},
		{[]string{"eval", "bpd", "--checkpoint", dir, "--step", "7"},
			"--step 7: " + file + " holds no checkpoint of that step (it holds step 0)"},
		{[]string{"eval", "bpd", "--checkpoint", dir, "--data", "mnist:train", "--split", "test"}, "--split test conflicts with the split in mnist:train"},
		{[]string{"eval", "bpd", "--checkpoint", dir, "--batch", "5000"}, "--batch 5000: at most 1024 images per model evaluation"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	mustNotExist(t, out)
}

// TestCoordinatorAddressChecked: an address that is not host:port is refused at once (one line,
// exit 2), not after --timeout of dialing.
func TestCoordinatorAddressChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--coordinator", "nonsense", "--insecure"}, "status: --coordinator nonsense: not a host:port address (missing port in address)"},
		{[]string{"status", "--coordinator", "127.0.0.1:7000,nonsense:x"}, `status: --coordinator nonsense:x: port "x" is not a number in 1..65535`},
		{[]string{"loss", "--coordinator", "host:0", "--insecure"}, `loss: --coordinator host:0: port "0" is not a number in 1..65535`},
		{[]string{"loss", "--coordinator", "http://host:80", "--insecure"}, "loss: --coordinator http://host:80: not a host:port address (too many colons in address)"},
	} {
		t0 := time.Now()
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("%v took %v, want at once", tc.args, d)
		}
	}
	if err := checkHostPort("[::1]:7000"); err != nil {
		t.Errorf("[::1]:7000: %v", err)
	}
	if err := checkHostPort(":7000"); err != nil {
		t.Errorf(":7000: %v", err)
	}
}

// cancelOnWrite is a stderr that cancels the command's context at the first write containing
// mark, as a Ctrl-C in the middle of the work would.
type cancelOnWrite struct {
	bytes.Buffer
	mark   string
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	if w.cancel != nil && bytes.Contains(p, []byte(w.mark)) {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

// TestProgressLineEnds: on a terminal, the progress line of sample and eval bpd is rewritten in
// place and finished with a newline when the work is done and when it is interrupted (exit 130,
// nothing written), so the summary and the shell prompt start on a line of their own.
func TestProgressLineEnds(t *testing.T) {
	dir, file := evalFixture(t)
	defer func(f func(io.Writer) bool) { isTerminal = f }(isTerminal)
	isTerminal = func(io.Writer) bool { return true }
	out := filepath.Join(t.TempDir(), "x.png")

	check := func(args []string, stderr string, wantLast string) {
		t.Helper()
		stderr = dropEMAWarning(stderr)
		if !strings.HasPrefix(stderr, "\r") || !strings.HasSuffix(stderr, "\n") {
			t.Errorf("%v: stderr %q: want a line rewritten with \\r and ended by a newline", args, stderr)
			return
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		last := lines[len(lines)-1]
		if i := strings.LastIndex(last, "\r"); i >= 0 {
			last = last[i+1:] // what the terminal shows of a line rewritten in place
		}
		if !strings.HasPrefix(last, wantLast) {
			t.Errorf("%v: last line of stderr %q, want it to begin %q", args, last, wantLast)
		}
	}

	args := []string{"sample", "--checkpoint", dir, "--n", "2", "--out", out}
	var stderr bytes.Buffer
	if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
		t.Fatal(err)
	}
	check(args, stderr.String(), "ddpm sample: 2 samples of "+file+" step 0 (EMA) in ")
	if !strings.Contains(stderr.String(), "ddpm sample: images 1-2 of 2: step 20 of 20 (") {
		t.Errorf("stderr %q: no report of the last step", stderr.String())
	}

	// Interrupted: the line ends, the reason follows on a line of its own, nothing is written.
	out2 := filepath.Join(t.TempDir(), "y.png")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOnWrite{mark: "step 1 of", cancel: cancel}
	args = []string{"sample", "--checkpoint", dir, "--n", "2", "--out", out2}
	_, err := runCLI(t, ctx, w, args...)
	wantExit(t, args, err, exitInterrupted, "sample interrupted at step 2 of 20 of images 1-2 of 2; nothing was written")
	if s := dropEMAWarning(w.String()); !strings.HasPrefix(s, "\r") || !strings.HasSuffix(s, "\n") {
		t.Errorf("interrupted sample: stderr %q, want one progress line ended by a newline", s)
	}
	mustNotExist(t, out2)

	args = []string{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "1"}
	stderr.Reset()
	if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
		t.Fatal(err)
	}
	check(args, stderr.String(), "ddpm eval bpd: 2/2 images, running total ")

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w = &cancelOnWrite{mark: "1/2 images", cancel: cancel}
	_, err = runCLI(t, ctx, w, args...)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitInterrupted || !strings.HasPrefix(err.Error(), "eval bpd interrupted after 1 of 2 images (running total ") {
		t.Errorf("interrupted eval: %v, want exit 130 naming the images done", err)
	}
	if s := w.String(); !strings.HasSuffix(s, "\n") {
		t.Errorf("interrupted eval: stderr %q, want it ended by a newline", s)
	}

	// Interrupted within the first batch: no running total ("NaN bits/dim" before).
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	w = &cancelOnWrite{mark: "timestep 1 of", cancel: cancel}
	args = []string{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"}
	_, err = runCLI(t, ctx, w, args...)
	wantExit(t, args, err, exitInterrupted, "eval bpd interrupted before the first 2 images were done")
}

// TestSampleBatchesAgree: sampling --n images sampleBatch at a time gives the grid of one batch
// of --n (image i's noise depends on the seed and i alone), and the progressive grid too.
func TestSampleBatchesAgree(t *testing.T) {
	dir, _ := evalFixture(t)
	defer func(b int) { sampleBatch = b }(sampleBatch)
	tmp := t.TempDir()
	var grids [2][2][32]byte
	for i, batch := range []int{64, 2} {
		sampleBatch = batch
		out, prog := filepath.Join(tmp, fmt.Sprint("x", i, ".png")), filepath.Join(tmp, fmt.Sprint("p", i, ".png"))
		if _, err := runCLI(t, context.Background(), nil, "sample", "--checkpoint", dir, "--n", "3", "--seed", "5", "--out", out, "--progressive", prog, "--every", "5"); err != nil {
			t.Fatal(err)
		}
		grids[i] = [2][32]byte{fileSum(t, out), fileSum(t, prog)}
	}
	if grids[0] != grids[1] {
		t.Errorf("3 samples in batches of 2 differ from one batch of 3")
	}
}

// TestOutputFolderNotWritable: an output in a folder where no file can be created (here /proc;
// a read-only mount or another user's folder alike) is refused with exit 2 before any work,
// not after sampling, exporting or decoding the dataset.
func TestOutputFolderNotWritable(t *testing.T) {
	dir, _ := evalFixture(t)
	cannot := func(flag, path string) string {
		return flag + " " + path + ": cannot create a file in folder /proc (no such file or directory)"
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", "/proc/x.png"}, cannot("--out", "/proc/x.png")},
		{[]string{"sample", "--checkpoint", dir, "--export-weights", "/proc/w.safetensors"}, cannot("--export-weights", "/proc/w.safetensors")},
		{[]string{"checkpoint", "export", dir, "--out", "/proc/w.safetensors"}, "checkpoint export: " + cannot("--out", "/proc/w.safetensors")},
		{[]string{"dataset", "inspect", "mnist:test", "--preview", "/proc/p.png"}, cannot("--preview", "/proc/p.png")},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}

// TestSampleProgressiveNeedsSamples: --progressive is written only along --n samples; with
// --interpolate or without --out (only --export-weights) it used to be dropped silently (exit
// 0, no file). Both are refused before anything is loaded or written.
func TestSampleProgressiveNeedsSamples(t *testing.T) {
	dir, _ := evalFixture(t)
	tmp := t.TempDir()
	out, prog, w := filepath.Join(tmp, "x.png"), filepath.Join(tmp, "p.png"), filepath.Join(tmp, "w.safetensors")
	a := filepath.Join(tmp, "a.png")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", out, "--progressive", prog, "--interpolate", a + "," + a},
			"--progressive records the chain of --n samples; it cannot be combined with --interpolate"},
		{[]string{"--export-weights", w, "--progressive", prog}, "--progressive needs --out (the samples whose chain it records)"},
	} {
		args := append([]string{"sample", "--checkpoint", dir}, tc.args...)
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
	}
	for _, p := range []string{out, prog, w} {
		mustNotExist(t, p)
	}
}

// TestExportKeepsRunConfig: checkpoint export --force onto the run.yaml beside the checkpoint
// (the trainer's or the run folder's) is refused, as sample --out is: it used to replace the
// run config with safetensors bytes, after which sample and eval could not read the run.
func TestExportKeepsRunConfig(t *testing.T) {
	dir, file := evalFixture(t)
	trainerCfg := filepath.Join(dir, "trainer-0", trainer.ConfigFile)
	if err := os.WriteFile(trainerCfg, fixtureRun.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	runCfg := filepath.Join(dir, trainer.ConfigFile)
	sums := map[string][32]byte{trainerCfg: fileSum(t, trainerCfg), runCfg: fileSum(t, runCfg)}
	for _, cfg := range []string{trainerCfg, runCfg} {
		args := []string{"checkpoint", "export", file, "--out", cfg, "--force"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "checkpoint export: --out "+cfg+" is the same file as the run config "+cfg+", an input; nothing was written")
	}
	for p, s := range sums {
		if fileSum(t, p) != s {
			t.Errorf("%s changed", p)
		}
	}
}

// TestImageOutputsArePNGNames: an image output named other than *.png (any case) is refused
// before any work, since the bytes are PNG whatever the name; nothing is written.
func TestImageOutputsArePNGNames(t *testing.T) {
	dir, _ := evalFixture(t)
	out := t.TempDir()
	jpg, gif, upper := filepath.Join(out, "grid.jpg"), filepath.Join(out, "p.gif"), filepath.Join(out, "GRID.PNG")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", jpg}, "--out " + jpg + ": the image is written as PNG; give it a .png name"},
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", upper, "--progressive", gif}, "--progressive " + gif + ": the image is written as PNG; give it a .png name"},
		{[]string{"dataset", "inspect", "mnist:test", "--preview", gif}, "--preview " + gif + ": the image is written as PNG; give it a .png name"},
		{[]string{"loss", "--coordinator", "127.0.0.1:1", "--insecure", "--png", jpg}, "loss: --png " + jpg + ": the image is written as PNG; give it a .png name"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("refused commands wrote %v", entries)
	}
}

// TestModelBenchBatchBounded: model bench and compare refuse a batch no model evaluation here
// takes (it used to run until the kernel killed the process for memory).
func TestModelBenchBatchBounded(t *testing.T) {
	for _, args := range [][]string{
		{"model", "bench", "--preset", "tiny", "--batch", "100000"},
		{"model", "compare", "--preset", "tiny", "--batch", "100000"},
	} {
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "--batch 100000: at most 1024 images per model evaluation")
	}
}

// dropEMAWarning removes sample's stale-EMA warning line (the fixture's checkpoint is at step 0), so
// what is left is the progress output alone.
func dropEMAWarning(stderr string) string {
	if !strings.HasPrefix(stderr, "ddpm sample: warning: the EMA weights of step ") && !strings.HasPrefix(stderr, "ddpm eval bpd: warning: the EMA weights of step ") {
		return stderr
	}
	if i := strings.IndexByte(stderr, '\n'); i >= 0 {
		return stderr[i+1:]
	}
	return ""
}
