package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeImages writes n PNG images of side x side into dir (created): greyscale (image.Gray)
// when grey, else RGB.
func writeImages(t *testing.T, dir string, n, side int, grey bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		var img image.Image
		if grey {
			g := image.NewGray(image.Rect(0, 0, side, side))
			for k := range g.Pix {
				g.Pix[k] = uint8(k*7 + i*31)
			}
			img = g
		} else {
			c := image.NewNRGBA(image.Rect(0, 0, side, side))
			for k := 0; k < side*side; k++ {
				c.SetNRGBA(k%side, k/side, color.NRGBA{uint8(k + i), uint8(3 * k), uint8(i * 40), 255})
			}
			img = c
		}
		var b bytes.Buffer
		if err := png.Encode(&b, img); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%03d.png", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLocalGreyFolderTrainsOneChannel: a folder of greyscale 32x32 PNGs trains the mnist
// preset's 1-channel tiny U-Net (2 steps, real processes); it used to be read as 3x32x32 and
// refused ("dataset D has 3x32x32 images, model "tiny" wants 1x32x32"). Data a model cannot
// take is one line naming both shapes and the way out, status 2, before any folder is made:
// RGB images for a greyscale model and a size the model does not have (greyscale images train an
// RGB model: TestLocalGreyFolderThreeChannelModel); an undecodable image names ddpm dataset prepare --skip-bad, which ddpm local lacks.
// A dataset path given relative to the working directory is recorded absolute in
// run.yaml: it used to be kept as typed, so that --resume, ddpm sample and ddpm eval from another
// directory read other data or none.
func TestLocalGreyFolderTrainsOneChannel(t *testing.T) {
	root := t.TempDir()
	grey, rgb, grey28 := filepath.Join(root, "grey"), filepath.Join(root, "rgb"), filepath.Join(root, "grey28")
	writeImages(t, grey, 8, 32, true)
	writeImages(t, rgb, 8, 32, false)
	writeImages(t, grey28, 8, 28, true)
	// A folder with an undecodable file: ddpm local has no --skip-bad, so the line says where it is.
	bad := filepath.Join(root, "bad")
	writeImages(t, bad, 2, 32, true)
	if err := os.WriteFile(filepath.Join(bad, "zz.png"), []byte("xx"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(root, "fresh")
	short := []string{"--trainers", "1", "--coordinators", "1", "--steps", "2", "--checkpoint-every", "1", "--samples", "0",
		"--global-batch", "4", "--max-trainers", "1", "--quiet", "--out", fresh}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", rgb, "--preset", "mnist"},
			"ddpm: dataset " + rgb + ` has 3x32x32 images (RGB), model "tiny" wants 1x32x32 (greyscale); the models for 3x32x32 images: cifar10, small (--model)`},
		{[]string{"--data", grey28, "--preset", "mnist"},
			"ddpm: dataset " + grey28 + ` has 1x28x28 images (greyscale), model "tiny" wants 1x32x32 (greyscale); make a copy at 32x32 with: ddpm dataset prepare ` + grey28 + " --resolution 32 --out DIR, and train on DIR"},
		{[]string{"--data", bad, "--preset", "mnist"},
			"ddpm: dataset \"" + bad + "\": undecodable image: " + filepath.Join(bad, "zz.png") + ": image: unknown format; to train on the others: ddpm dataset prepare " + bad + " --skip-bad --out DIR, and train on DIR"},
	} {
		wantOneLine(t, runLocalCmd(t, append(tc.args, short...)...), 2, tc.want)
		mustNotExist(t, fresh)
	}

	// Given relative to the working directory, the folder is recorded absolute in run.yaml.
	cmd, out := localCommand(t, append([]string{"--data", "grey", "--preset", "mnist"}, short...)...)
	cmd.Dir = root
	r := finish(t, cmd, out, cmd.Run())
	if r.code != 0 || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+fresh+"; final loss ") || !strings.HasSuffix(r.lastLine(), " at step 2") {
		t.Fatalf("grey folder, preset mnist: exit %d\n%s", r.code, r.out)
	}
	if y, err := os.ReadFile(filepath.Join(fresh, "run.yaml")); err != nil || !strings.Contains(string(y), "\ndataset: "+grey+"\n") {
		t.Errorf("run.yaml of --data grey in %s:\n%s\nwant dataset: %s (%v)", root, y, grey, err)
	}
	csv, err := os.ReadFile(filepath.Join(fresh, "loss.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if rows := strings.Split(strings.TrimSpace(string(csv)), "\n"); len(rows) != 3 || !strings.HasPrefix(rows[2], "2,") {
		t.Fatalf("loss.csv of the grey run:\n%s\nwant steps 1 and 2", csv)
	}
}

// TestLocalDataFolderNamesFittingPresets: ddpm local --data FOLDER without --preset names the
// presets whose model takes the folder's images (fashion-mnist and mnist for greyscale 32x32,
// and cifar10, which reads it as three equal channels; cifar10 for RGB 32x32) rather than every
// preset; a shape no preset takes still lists them all. A dataset's test
// split is refused as such.
func TestLocalDataFolderNamesFittingPresets(t *testing.T) {
	root := t.TempDir()
	grey, rgb, grey28 := filepath.Join(root, "grey"), filepath.Join(root, "rgb"), filepath.Join(root, "grey28")
	writeImages(t, grey, 2, 32, true)
	writeImages(t, rgb, 2, 32, false)
	writeImages(t, grey28, 2, 28, true)
	fresh := filepath.Join(root, "fresh")
	for _, tc := range []struct{ data, want string }{
		{grey, "--data " + grey + " holds 1x32x32 images (folder/grey) of no one preset; give --preset NAME too (the presets whose model takes 1x32x32 images, or 3x32x32 as the grey level in three channels: cifar10, fashion-mnist, mnist)"},
		{rgb, "--data " + rgb + " holds 3x32x32 images (folder/rgb) of no one preset; give --preset NAME too (the presets whose model takes 3x32x32 images: cifar10)"},
		{grey28, "--data " + grey28 + " holds 1x28x28 images (folder/grey28) of no one preset; give --preset NAME too (celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist)"},
	} {
		args := []string{"local", "--data", tc.data, "--out", fresh}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, fresh)
	}
	// A test split is named as such; it was "the split "test" in the name conflicts with the
	// split "train" asked for", a train split the user had not asked for.
	for _, data := range []string{"mnist:test", grey + ":test"} {
		args := []string{"local", "--data", data, "--preset", "mnist", "--out", fresh}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "dataset "+data+" names the test split; a run trains on the train split: give "+strings.TrimSuffix(data, ":test"))
		mustNotExist(t, fresh)
	}
}

// TestOutputsOutsideImageFolder: a file written inside an image folder becomes one of its images
// (the folder is read recursively): `ddpm dataset inspect imgs --preview imgs/p.png` made every
// later read of imgs fail ("mixed image sizes: imgs/p.png is 274x274"), and a ddpm local run
// folder inside imgs added loss.png and samples.png to the data its --resume reads. Both are
// refused in one line, exit 2, nothing written; a preview beside the folder is written.
func TestOutputsOutsideImageFolder(t *testing.T) {
	root := t.TempDir()
	imgs := filepath.Join(root, "imgs")
	writeImages(t, imgs, 2, 32, true)
	preview, run := filepath.Join(imgs, "p.png"), filepath.Join(imgs, "runs", "r1")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dataset", "inspect", imgs, "--preview", preview},
			"--preview " + preview + " is inside the image folder " + imgs + ", which is read recursively: the grid would become images of the dataset; give a path outside it"},
		{[]string{"local", "--data", imgs, "--preset", "mnist", "--out", run},
			"--out " + run + " is inside the image folder " + imgs + ", which is read recursively: the run's loss.png and samples.png would become images of the dataset; give a path outside it"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	mustNotExist(t, preview)
	mustNotExist(t, filepath.Join(imgs, "runs"))
	beside := filepath.Join(root, "p.png")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "inspect", imgs, "--preview", beside); err != nil {
		t.Fatalf("a preview beside the folder: %v", err)
	}
	if _, err := os.Stat(beside); err != nil {
		t.Fatal(err)
	}
}
