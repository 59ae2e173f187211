package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"ddpm/trainer"
)

// copyFile copies src to dst (a new file).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOutputsNeverReplaceRunInputs: an output file never replaces a file a run reads (its
// run.yaml, a checkpoint file, a dataset file), --force or not, even when it is none of the
// command's own inputs (ddpm loss --csv RUN/run.yaml --force used to write CSV over the run
// config, after which --resume failed); the --csv and export --out names must carry their
// format's extension; "-" (stdout) is refused as a file name. One line, exit 2, files intact.
func TestOutputsNeverReplaceRunInputs(t *testing.T) {
	dir, file := evalFixture(t)
	other := t.TempDir()
	runCfg := filepath.Join(dir, trainer.ConfigFile)
	ckptCopy := filepath.Join(other, "checkpoints.db") // a checkpoint file, not this command's input
	copyFile(t, file, ckptCopy)
	idx := filepath.Join(other, "train-images-idx3-ubyte")
	if err := os.WriteFile(idx, []byte{0, 0, 8, 3, 0, 0, 0, 0}, 0o644); err != nil {
		t.Fatal(err)
	}
	csvName := filepath.Join(other, "loss.txt")
	sums := map[string][32]byte{runCfg: fileSum(t, runCfg), ckptCopy: fileSum(t, ckptCopy), idx: fileSum(t, idx)}
	loss := []string{"loss", "--coordinator", "127.0.0.1:1", "--insecure"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(loss, "--csv", runCfg, "--force"),
			"loss: --csv " + runCfg + " is a YAML run config, the input of a run; an output never replaces one (nothing was written)"},
		{append(loss, "--csv", ckptCopy, "--force"),
			"loss: --csv " + ckptCopy + " is a bbolt checkpoint file, the input of a run; an output never replaces one (nothing was written)"},
		{append(loss, "--png", idx, "--force"),
			"loss: --png " + idx + " is a dataset file, the input of a run; an output never replaces one (nothing was written)"},
		{append(loss, "--csv", csvName), "loss: --csv " + csvName + ": the loss history is written as CSV; give it a .csv name"},
		{append(loss, "--csv", "-"), "loss: --csv -: the output is written to a file, not to stdout; give a file name"},
		{[]string{"checkpoint", "export", file, "--out", ckptCopy, "--force"},
			"checkpoint export: --out " + ckptCopy + " is a bbolt checkpoint file, the input of a run; an output never replaces one (nothing was written)"},
		{[]string{"checkpoint", "export", file, "--out", "-"}, "checkpoint export: --out -: the output is written to a file, not to stdout; give a file name"},
		{[]string{"checkpoint", "export", file, "--out", filepath.Join(other, "w.bin")},
			"checkpoint export: --out " + filepath.Join(other, "w.bin") + ": the weights are written as safetensors; give it a .safetensors name"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	for p, s := range sums {
		if fileSum(t, p) != s {
			t.Errorf("%s changed", p)
		}
	}
	for _, p := range []string{csvName, "-", filepath.Join(other, "w.bin")} {
		mustNotExist(t, p)
	}
}

// TestSniffFile: the kinds of file a run reads are told apart by their bytes, whatever their
// names.
func TestSniffFile(t *testing.T) {
	dir, file := evalFixture(t)
	other := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(other, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ path, want string }{
		{file, kindCheckpoint},
		{filepath.Join(dir, trainer.ConfigFile), kindRunConfig},
		{write("empty.db", nil), kindEmpty},
		{write("w.safetensors", append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, "{}"...)), kindSafetensors},
		{write("shard", []byte("DDPMSHD1\x00\x00\x00\x00")), kindDataset},
		{write("loss.csv", []byte("step,loss,lr,grad_norm\n1,0.5,0.0001,1\n")), ""},
		{write("notes.yaml", []byte("a: 1\n")), ""},
	} {
		if got := sniffFile(tc.path); got != tc.want {
			t.Errorf("sniffFile(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// TestWrongNameBeforeExists: an existing output whose name lacks its format's extension is
// refused for its name, not with "already exists (give --force to replace it)", advice that
// --force then refused for the name (ddpm loss --png certs/node.key sent a user round twice);
// an existing, rightly named file still asks for --force. One line, exit 2, files intact.
func TestWrongNameBeforeExists(t *testing.T) {
	dir, file := evalFixture(t)
	other := t.TempDir()
	write := func(name string) string {
		p := filepath.Join(other, name)
		if err := os.WriteFile(p, []byte("keep me\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, txt, bin, jpg, csv := write("node.key"), write("notes.txt"), write("w.bin"), write("grid.jpg"), write("loss.csv")
	loss := []string{"loss", "--coordinator", "127.0.0.1:1", "--insecure"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(loss, "--png", key), "loss: --png " + key + ": the image is written as PNG; give it a .png name"},
		{append(loss, "--csv", txt), "loss: --csv " + txt + ": the loss history is written as CSV; give it a .csv name"},
		{append(loss, "--csv", csv), "loss: --csv " + csv + " already exists (give --force to replace it)"},
		{[]string{"checkpoint", "export", file, "--out", bin},
			"checkpoint export: --out " + bin + ": the weights are written as safetensors; give it a .safetensors name"},
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", jpg}, "--out " + jpg + ": the image is written as PNG; give it a .png name"},
		{[]string{"dataset", "inspect", "mnist:test", "--preview", key}, "--preview " + key + ": the image is written as PNG; give it a .png name"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	for _, p := range []string{key, txt, bin, jpg, csv} {
		if b, err := os.ReadFile(p); err != nil || string(b) != "keep me\n" {
			t.Errorf("%s changed: %q %v", p, b, err)
		}
	}
}
