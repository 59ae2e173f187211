package dataset

import (
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Reference values read from the distributed files with an independent reader (Python gzip).
func TestRealMNIST(t *testing.T) {
	cases := []struct {
		spec        string
		n           int
		first       []int
		hist        [10]int
		sum0        int    // sum of image 0's 28x28 pixels
		row14       []byte // image 0, row 14, columns 12..19 (unpadded coordinates)
		fingerprint string
	}{
		{"mnist", 60000, []int{5, 0, 4, 1, 9, 2, 1, 3, 1, 4},
			[10]int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}, 27525,
			[]byte{0, 81, 240, 253, 253, 119, 25, 0}, ""},
		{"mnist:test", 10000, []int{7, 2, 1, 0, 4, 1, 4, 9, 5, 9},
			[10]int{980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009}, 18454,
			[]byte{0, 0, 0, 0, 59, 249, 254, 62}, ""},
		{"fashion-mnist", 60000, []int{9, 0, 0, 3, 0, 2, 7, 2, 5, 5},
			[10]int{6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000}, 76247,
			[]byte{237, 226, 217, 223, 222, 219, 222, 221}, ""},
		{"fashion-mnist:test", 10000, []int{9, 2, 1, 1, 6, 1, 4, 6, 5, 7},
			[10]int{1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000}, 33456,
			[]byte{98, 136, 110, 109, 110, 162, 135, 144}, ""},
	}
	for _, c := range cases {
		t.Run(c.spec, func(t *testing.T) {
			ds, err := Open(c.spec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if ds.Len() != c.n {
				t.Fatalf("Len = %d, want %d", ds.Len(), c.n)
			}
			if ch, h, w := ds.Shape(); ch != 1 || h != 32 || w != 32 {
				t.Fatalf("Shape = %d,%d,%d, want 1,32,32", ch, h, w)
			}
			for i, l := range c.first {
				if got := ds.Label(i); got != l {
					t.Fatalf("Label(%d) = %d, want %d", i, got, l)
				}
			}
			var hist [10]int
			for i := 0; i < ds.Len(); i++ {
				hist[ds.Label(i)]++
			}
			if hist != c.hist {
				t.Fatalf("label histogram %v, want %v", hist, c.hist)
			}
			pix := make([]uint8, 32*32)
			if err := ds.(Pixeler).Pixels(0, pix); err != nil {
				t.Fatal(err)
			}
			sum := 0
			for y := 0; y < 32; y++ {
				for x := 0; x < 32; x++ {
					v := int(pix[y*32+x])
					if (y < 2 || y >= 30 || x < 2 || x >= 30) && v != 0 {
						t.Fatalf("padding pixel (%d,%d) = %d, want 0", y, x, v)
					}
					sum += v
				}
			}
			if sum != c.sum0 {
				t.Fatalf("image 0 pixel sum %d, want %d", sum, c.sum0)
			}
			// Row 14, columns 12..19 of the 28x28 image sit at row 16, columns 14..21 after padding.
			if got := pix[16*32+14 : 16*32+22]; !slices.Equal(got, c.row14) {
				t.Fatalf("image 0 row 14 = %v, want %v", got, c.row14)
			}
			img := make([]float32, 32*32)
			if err := ds.Image(0, img); err != nil {
				t.Fatal(err)
			}
			for i, v := range pix {
				if want := float32(v)/127.5 - 1; img[i] != want {
					t.Fatalf("Image[%d] = %v, want %v", i, img[i], want)
				}
			}
			if img[0] != -1 {
				t.Fatalf("padding maps to %v, want -1", img[0])
			}
			if fp := ds.Fingerprint(); len(fp) != 64 || fp != ds.Fingerprint() {
				t.Fatalf("Fingerprint %q", fp)
			}
		})
	}
}

func TestMNISTNativeResolutionAndNames(t *testing.T) {
	ds, err := Open("mnist", Options{Resolution: 28, Split: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := ds.Shape(); c != 1 || h != 28 || w != 28 {
		t.Fatalf("Shape = %d,%d,%d", c, h, w)
	}
	if ds.Name() != "mnist/test" {
		t.Fatalf("Name = %q", ds.Name())
	}
	pad, _ := Open("mnist:test", Options{})
	if pad.Fingerprint() == ds.Fingerprint() {
		t.Fatal("padded and native MNIST have the same fingerprint")
	}
	if _, err := Open("mnist", Options{Resolution: 31}); !errors.Is(err, ErrOption) {
		t.Fatalf("resolution 31: %v", err)
	}
	if _, err := Open("mnist:test", Options{Split: "train"}); !errors.Is(err, ErrOption) ||
		!strings.HasSuffix(err.Error(), `mnist:test: the split "test" in the name conflicts with the split "train" asked for`) {
		t.Fatalf("conflicting split: %v", err)
	}
}

// writeIdx3 writes a plain (not gzipped) idx image file named name in dir holding the first 3
// MNIST test images, and returns its path.
func writeIdx3(t *testing.T, dir, name string) string {
	t.Helper()
	gz, err := MNISTDir()
	if err != nil {
		t.Fatal(err)
	}
	_, raw, err := readIdx(filepath.Join(gz, "t10k-images-idx3-ubyte.gz"), idxImagesMagic)
	if err != nil {
		t.Fatal(err)
	}
	hdr := []byte{0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, append(hdr, raw[:3*784]...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// The idx reader takes plain files too, and finds the labels file beside the images.
func TestIdxPlainFileAndMNISTDirOverride(t *testing.T) {
	dir := t.TempDir()
	p := writeIdx3(t, dir, "t10k-images-idx3-ubyte")
	ds, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 3 || ds.Label(0) != -1 {
		t.Fatalf("Len %d Label %d", ds.Len(), ds.Label(0))
	}
	ref, _ := Open("mnist:test", Options{})
	a, b := make([]float32, 1024), make([]float32, 1024)
	ds.Image(2, a)
	ref.Image(2, b)
	if !slices.Equal(a, b) {
		t.Fatal("plain idx image differs from the gzip one")
	}
	t.Setenv(EnvMNISTDir, dir)
	if _, err := Open("mnist", Options{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("override to a folder without files: %v", err)
	}
}

// An idx file named train-* holds the training split: asking it for the test split (eval bpd's
// default) is refused instead of answering with training images labelled "test".
func TestIdxTrainFileRefusesTestSplit(t *testing.T) {
	p := writeIdx3(t, t.TempDir(), "train-images-idx3-ubyte")
	want := "unsupported option: " + p + ": holds the train split, test asked"
	for _, c := range []struct {
		spec string
		opts Options
	}{{p, Options{Split: "test"}}, {p + ":test", Options{}}} {
		if _, err := Open(c.spec, c.opts); !errors.Is(err, ErrOption) || err.Error() != want {
			t.Fatalf("Open(%s, %+v): %v\nwant %s", c.spec, c.opts, err, want)
		}
	}
	ds, err := Open(p, Options{Split: "train"})
	if err != nil || ds.Len() != 3 || Describe(ds).Split != "train" {
		t.Fatalf("train split: %v", err)
	}
	_, stderr, code := runDDPM(t, "dataset", "inspect", p, "--split", "test")
	if code != 2 || stderr != "ddpm: "+want+"\n" {
		t.Fatalf("inspect --split test: exit %d, %q", code, stderr)
	}
}

// An idx file named t10k-* holds the test split: a train split asked explicitly (--split train,
// a ":train" suffix) is refused as its mirror case is, instead of training on test images; the
// commands' default split still opens it. A prepared copy of it keeps the same rule.
func TestIdxTestFileRefusesTrainSplit(t *testing.T) {
	dir := t.TempDir()
	p := writeIdx3(t, dir, "t10k-images-idx3-ubyte")
	want := "unsupported option: " + p + ": holds the test split, train asked"
	for _, c := range []struct {
		spec string
		opts Options
	}{{p, Options{Split: "train"}}, {p + ":train", Options{}}} {
		if _, err := Open(c.spec, c.opts); !errors.Is(err, ErrOption) || err.Error() != want {
			t.Fatalf("Open(%s, %+v): %v\nwant %s", c.spec, c.opts, err, want)
		}
	}
	for _, opts := range []Options{{}, {Split: "test"}} {
		ds, err := Open(p, opts)
		if err != nil || ds.Len() != 3 || Describe(ds).Split != "test" {
			t.Fatalf("Open(%s, %+v): %v", p, opts, err)
		}
	}
	_, stderr, code := runDDPM(t, "dataset", "inspect", p, "--split", "train")
	if code != 2 || stderr != "ddpm: "+want+"\n" {
		t.Fatalf("inspect --split train: exit %d, %q", code, stderr)
	}

	src, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "prepared")
	if _, err := Prepare(src, out, 1<<20); err != nil {
		t.Fatal(err)
	}
	want = "unsupported option: " + out + ": holds the test split, train asked"
	if _, err := Open(out, Options{Split: "train"}); !errors.Is(err, ErrOption) || err.Error() != want {
		t.Fatalf("prepared, train asked: %v\nwant %s", err, want)
	}
	if ds, err := Open(out, Options{}); err != nil || ds.Len() != 3 {
		t.Fatalf("prepared, default split: %v", err)
	}
}

// A gzip idx file that inflates far past the data its header declares (a gzip bomb: 784 declared
// bytes, 64 MiB of zeros) is read only to one byte past the declared size and refused by the
// length check, instead of being inflated whole into memory first.
func TestIdxGzipBombCutAtDeclaredSize(t *testing.T) {
	p := filepath.Join(t.TempDir(), "t10k-images-idx3-ubyte.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(f, gzip.BestSpeed)
	zw.Write([]byte{0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28})
	zeros := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zeros)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Open(p, Options{})
	if want := "malformed data: " + p + ": idx header declares [1 28 28] = 784 data bytes, the gzip stream inflates to more"; !errors.Is(err, ErrFormat) || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}
