package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocalGreyFolderThreeChannelModel: a folder of greyscale PNGs trains a 3-channel model
// (--preset cifar10 --model small, 2 steps, real processes), each image's grey level in all
// three channels, as every version before 1-channel grey folders read it (its runs on grey
// folders resume: the data has the fingerprint they pinned, see dataset's
// TestGreyFolderForThreeChannelModel). Since grey folders opened as 1 channel, ddpm local refused
// it ("dataset D has 1x32x32 images (greyscale), model "small" wants 3x32x32 (RGB); ...") and the
// trainers of a resumed run exited at start-up ("trainer: does not match the run: dataset
// folder/grey has 1x32x32 images, model "small" wants 3x32x32").
func TestLocalGreyFolderThreeChannelModel(t *testing.T) {
	root := t.TempDir()
	grey, run := filepath.Join(root, "grey"), filepath.Join(root, "run")
	writeImages(t, grey, 8, 32, true)
	r := runLocalCmd(t, "--data", grey, "--preset", "cifar10", "--model", "small", "--trainers", "1", "--coordinators", "1",
		"--steps", "2", "--checkpoint-every", "1", "--samples", "0", "--global-batch", "4", "--max-trainers", "1", "--quiet", "--out", run)
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+run+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("grey folder, model small: exit %d\n%s", r.code, r.out)
	}
	csv, err := os.ReadFile(filepath.Join(run, "loss.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if rows := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(rows) != 3 || !strings.HasPrefix(rows[2], "2,") {
		t.Fatalf("loss.csv of the grey run of model small:\n%s\nwant steps 1 and 2", csv)
	}
}
