package dataset

import (
	"errors"
	"image"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestRunFolderIsNotADataset: a ddpm local run folder, a trainer's folder, a checkpoints.db, one
// image and an idx labels file, given where a dataset is expected (ddpm dataset inspect, eval
// bpd --data), are each refused in one line saying what they are, with exit status 2. A run
// folder used to be read as an image folder and refused for its loss.png ("non-square images:
// RUN/loss.png is 768x480", exit 1), the files as "not an idx3 images file, a .tar.gz, data.mdb
// or index.json".
func TestRunFolderIsNotADataset(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	trainerDir := filepath.Join(run, "trainer-0")
	if err := os.MkdirAll(trainerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(trainerDir, "checkpoints.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for name, b := range map[string][]byte{
		"local.json": []byte("{}\n"),
		"run.yaml":   []byte("preset: mnist\n"),
		"loss.png":   encodePNG(t, image.NewGray(image.Rect(0, 0, 12, 8))),
	} {
		if err := os.WriteFile(filepath.Join(run, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	imgs := filepath.Join(root, "imgs")
	writeLevels(t, imgs, true)
	one := filepath.Join(imgs, "00.png")
	labels := filepath.Join(root, "t10k-labels-idx1-ubyte.gz")
	if err := os.WriteFile(labels, []byte{0x1f, 0x8b}, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ path, want string }{
		{run, run + ": a ddpm local run folder, not a dataset; give the data itself (a preset's name, or the folder of the images)"},
		{trainerDir, trainerDir + ": a trainer's folder (checkpoints.db), not a dataset; give the data itself (a preset's name, or the folder of the images)"},
		{filepath.Join(trainerDir, "checkpoints.db"), filepath.Join(trainerDir, "checkpoints.db") + ": a checkpoint file (bbolt), not a dataset"},
		{one, one + ": one image, not a dataset (a folder of images is one: give " + imgs + ")"},
		{labels, labels + ": an idx labels file, not images (give " + filepath.Join(root, "t10k-images-idx3-ubyte.gz") + "; its labels are read beside it)"},
	} {
		_, err := Open(tc.path, Options{})
		if want := "unrecognized dataset format: " + tc.want; !errors.Is(err, ErrUnknownFormat) || err.Error() != want {
			t.Errorf("Open(%s):\n got %v\nwant %s", tc.path, err, want)
		}
		_, stderr, code := runDDPM(t, "dataset", "inspect", tc.path)
		if want := "ddpm: unrecognized dataset format: " + tc.want + "\n"; code != 2 || stderr != want {
			t.Errorf("ddpm dataset inspect %s: exit %d, stderr %q; want exit 2, %q", tc.path, code, stderr, want)
		}
	}
	// The image folder itself still opens.
	if _, err := Open(imgs, Options{}); err != nil {
		t.Fatal(err)
	}
}
