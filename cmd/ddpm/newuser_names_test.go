package main

import (
	"context"
	"path/filepath"
	"testing"
)

// TestNewUserModelInfoNames: ddpm model info given a run preset's name (mnist, the preset ddpm
// local trains by default) names the U-Net that preset trains and the command for it; a near
// miss of a U-Net preset gets "did you mean". Both said only 'unet: invalid config: unknown
// preset "mnist" (known: ...)'.
func TestNewUserModelInfoNames(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "info", "mnist"}, "model info mnist: mnist is a run preset (ddpm local --preset mnist); its U-Net is tiny: ddpm model info tiny"},
		{[]string{"model", "info", "--preset", "celebahq"}, "--preset: celebahq is a run preset (ddpm local --preset celebahq); its U-Net is celebahq256: ddpm model info celebahq256"},
		{[]string{"model", "info", "tinyy"}, `model info tinyy: no U-Net preset "tinyy"; did you mean tiny? (known: celebahq256, cifar10, lsun256, small, tiny)`},
		{[]string{"model", "info", "cifar"}, `model info cifar: no U-Net preset "cifar"; did you mean cifar10? (known: celebahq256, cifar10, lsun256, small, tiny)`},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}

// TestNewUserInterpolateKinds: an --interpolate "image" that is a folder or a binary file of a
// kind ddpm knows (a checkpoint, weights, a dataset shard) says what it is; they were 'not a
// PNG, JPEG or WebP image (image: unknown format)'.
func TestNewUserInterpolateKinds(t *testing.T) {
	dir, _ := evalFixture(t)
	tmp := t.TempDir()
	writeImages(t, filepath.Join(tmp, "imgs"), 1, 32, true)
	a := filepath.Join(tmp, "imgs", "000.png")
	out := filepath.Join(tmp, "i.png")
	db := filepath.Join(dir, "trainer-0", "checkpoints.db")
	for _, tc := range []struct{ b, want string }{
		{filepath.Join(tmp, "imgs"), "--interpolate image " + filepath.Join(tmp, "imgs") + " is a folder; give two image files, A.png,B.png"},
		{db, "--interpolate image " + db + " is a bbolt checkpoint file, not a PNG, JPEG or WebP image"},
	} {
		args := []string{"sample", "--checkpoint", dir, "--out", out, "--interpolate", a + "," + tc.b}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, out)
	}
}

// TestNewUserExportWeightsName: sample --export-weights of a name without .safetensors is
// refused as checkpoint export --out is, exit 2, nothing written; it wrote safetensors into
// w.bin (or into a .png name) without a word.
func TestNewUserExportWeightsName(t *testing.T) {
	dir, _ := evalFixture(t)
	for _, name := range []string{"w.bin", "w.png"} {
		w := filepath.Join(t.TempDir(), name)
		args := []string{"sample", "--checkpoint", dir, "--export-weights", w}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, "--export-weights "+w+": the weights are written as safetensors; give it a .safetensors name")
		mustNotExist(t, w)
	}
}
