package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestIdxFolderOpensAsIdx: a folder of idx .gz files (Debian's dataset-fashion-mnist folder, the
// GoMNIST module's data/ folder) opens as the idx dataset with both splits and the content of the
// built-in spec; it was opened as an image folder and refused for holding no .png files.
func TestIdxFolderOpensAsIdx(t *testing.T) {
	mnistDir, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir, builtin string
		n            [2]int
	}{
		{"/usr/share/datasets/fashion-mnist", "fashion-mnist", [2]int{60000, 10000}},
		{mnistDir, "mnist", [2]int{60000, 10000}},
	} {
		for i, split := range []string{"train", "test"} {
			ds, err := Open(c.dir, Options{Split: split})
			if err != nil {
				t.Fatalf("Open(%s, %s): %v", c.dir, split, err)
			}
			ref, err := Open(c.builtin+":"+split, Options{})
			if err != nil {
				t.Fatal(err)
			}
			info := Describe(ds)
			wantName := "idx/" + filepath.Base(c.dir) + "/" + split
			if info.Format != "mnist-idx" || info.Name != wantName || info.Split != split || info.Count != c.n[i] ||
				info.C != 1 || info.H != 32 || info.W != 32 || !info.Labeled {
				t.Errorf("Open(%s, %s): %+v, want mnist-idx %s of %d labeled 1x32x32 images", c.dir, split, info, wantName, c.n[i])
			}
			if ds.Fingerprint() != ref.Fingerprint() {
				t.Errorf("Open(%s, %s): fingerprint %s, %s has %s", c.dir, split, ds.Fingerprint(), c.builtin, ref.Fingerprint())
			}
		}
	}
	// A folder holding only the training files has no test split: named, not trained on.
	dir := t.TempDir()
	writeIdx3(t, dir, "train-images-idx3-ubyte")
	if ds, err := Open(dir, Options{}); err != nil || ds.Len() != 3 || Describe(ds).Split != "train" {
		t.Fatalf("train-only folder: %v", err)
	}
	want := "dataset not found: " + dir + ": holds no test split (t10k-images-idx3-ubyte.gz missing)"
	if _, err := Open(dir+":test", Options{}); !errors.Is(err, ErrNotFound) || err.Error() != want {
		t.Fatalf("train-only folder, test split: %v\nwant %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "train-labels-idx1-ubyte")); !os.IsNotExist(err) {
		t.Fatal("fixture unexpectedly has labels")
	}
}
