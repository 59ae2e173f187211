package dataset

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/dataset/lmdb/lmdbtest"
	"ddpm/internal/testutil"
)

// ddpmBinary is the real command, built once per test process.
func ddpmBinary(t *testing.T) string {
	t.Helper()
	return testutil.DDPMBinary(t)
}

// runDDPM runs the binary and returns stdout, stderr and the exit status.
func runDDPM(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(ddpmBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// Every bad input gives exit status 1 and exactly one line on stderr naming the file (and the
// record or key), never a panic trace.
func TestCLIBadInputs(t *testing.T) {
	root := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(root, name)
		os.MkdirAll(p, 0o755)
		return p
	}

	truncated := mk("cifar-truncated")
	writeCIFAR(t, truncated, 3)
	b, _ := os.ReadFile(filepath.Join(truncated, "data_batch_3.bin"))
	os.WriteFile(filepath.Join(truncated, "data_batch_3.bin"), b[:len(b)-100], 0o644)

	missing := mk("cifar-missing")
	writeCIFAR(t, missing, 2)
	os.Remove(filepath.Join(missing, "data_batch_4.bin"))

	badLabel := mk("cifar-notcifar")
	writeCIFAR(t, badLabel, 2)
	b, _ = os.ReadFile(filepath.Join(badLabel, "data_batch_2.bin"))
	b[cifarRecord] = 200 // record 1's label byte
	os.WriteFile(filepath.Join(badLabel, "data_batch_2.bin"), b, 0o644)

	tgzFiles := writeCIFAR(t, mk("cifar-for-tar"), 2)
	tgz := filepath.Join(root, "cifar-10-binary.tar.gz")
	writeTarGz(t, tgz, tgzFiles, []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"})
	tb, _ := os.ReadFile(tgz)
	cut := filepath.Join(root, "cut.tar.gz")
	os.WriteFile(cut, tb[:len(tb)/2], 0o644)

	idx := filepath.Join(root, "train-images-idx3-ubyte")
	os.WriteFile(idx, []byte{0, 0, 8, 1, 0, 0, 0, 1, 7}, 0o644)
	idxShort := filepath.Join(root, "t10k-images-idx3-ubyte")
	os.WriteFile(idxShort, append([]byte{0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28}, make([]byte, 784+10)...), 0o644)

	lsunEmpty := filepath.Join(root, "lsun-empty")
	writeLSUN(t, lsunEmpty, lmdbtest.Pair{Key: []byte("0000bad"), Value: nil})
	lsunJunk := filepath.Join(root, "lsun-junk")
	writeLSUN(t, lsunJunk, lmdbtest.Pair{Key: []byte("ffff-junk"), Value: []byte("\xff\xd8\xff not really a jpeg")})

	unreadable := mk("folder-unreadable")
	os.WriteFile(filepath.Join(unreadable, "a.png"), encodePNG(t, pattern(8, 8, 1)), 0o644)
	os.WriteFile(filepath.Join(unreadable, "b.png"), []byte("\x89PNG\r\n\x1a\n garbage"), 0o644)
	empty := mk("folder-empty")
	os.WriteFile(filepath.Join(empty, "README.txt"), []byte("no images here"), 0o644)
	bmps := mk("folder-bmp")
	for _, name := range []string{"a.bmp", "b.bmp", "c.GIF"} {
		os.WriteFile(filepath.Join(bmps, name), []byte("BM"), 0o644)
	}
	mixed := mk("folder-mixed")
	os.WriteFile(filepath.Join(mixed, "a.png"), encodePNG(t, pattern(8, 8, 1)), 0o644)
	os.WriteFile(filepath.Join(mixed, "b.png"), encodePNG(t, pattern(8, 6, 2)), 0o644)

	cases := []struct {
		name string
		args []string
		want string // the whole line after "ddpm: " must contain this
	}{
		// Exit status 1: data that cannot be read.
		{"truncated CIFAR", []string{"dataset", "inspect", truncated},
			"malformed data: " + filepath.Join(truncated, "data_batch_3.bin") + ": 9119 bytes is not a whole number of 3073-byte records (1 label + 3x32x32 pixels): record 2 is cut short at 2973 bytes"},
		{"not CIFAR", []string{"dataset", "inspect", badLabel},
			"malformed data: " + filepath.Join(badLabel, "data_batch_2.bin") + ": record 1: label 200 is not a CIFAR-10 class (0..9)"},
		{"truncated tar.gz", []string{"dataset", "inspect", cut},
			"malformed data: " + cut + ": "},
		{"wrong idx magic", []string{"dataset", "inspect", idx},
			"malformed data: " + idx + ": idx magic number 0x00000801, want images (0x00000803)"},
		{"mis-sized idx", []string{"dataset", "inspect", idxShort},
			"malformed data: " + idxShort + ": idx header declares [2 28 28] = 1568 data bytes, file holds 794"},
		{"empty LMDB value", []string{"dataset", "inspect", lsunEmpty, "--resolution", "16"},
			"undecodable image: " + lsunEmpty + `: key "0000bad": 0-byte value: empty (--skip-bad leaves undecodable images out, counted and named)`},
		{"undecodable LMDB value", []string{"dataset", "inspect", lsunJunk, "--resolution", "16"},
			"undecodable image: " + lsunJunk + `: key "ffff-junk": 21-byte value: invalid JPEG format: unknown marker (--skip-bad leaves undecodable images out, counted and named)`},
		{"unreadable image", []string{"dataset", "inspect", unreadable},
			"undecodable image: " + filepath.Join(unreadable, "b.png") + ": "},
		{"empty folder", []string{"dataset", "inspect", empty},
			"no images: " + empty + ": no .png/.jpg/.jpeg/.webp files (searched recursively; it holds 1 .txt file); not a CIFAR-10, LMDB or prepared folder either"},
		// Images of a kind ddpm does not read are counted by kind.
		{"folder of other images", []string{"dataset", "inspect", bmps},
			"no images: " + bmps + ": no .png/.jpg/.jpeg/.webp files (searched recursively; it holds 2 .bmp and 1 .gif files); not a CIFAR-10, LMDB or prepared folder either"},
		{"mixed sizes", []string{"dataset", "inspect", mixed},
			"mixed image sizes: " + filepath.Join(mixed, "b.png") + " is 8x6, the folder's images are 8x8; pass a resolution to center-crop and resize all (--resolution N of ddpm dataset inspect/prepare; to train, prepare the folder with it and train on the prepared folder)"},
	}
	// Exit status 2: a dataset that is not there (or incomplete) or an option it cannot honour,
	// i.e. a command line to correct.
	usage := len(cases)
	cases = append(cases, []struct {
		name string
		args []string
		want string
	}{
		{"missing CIFAR batch", []string{"dataset", "inspect", missing},
			"dataset not found: " + filepath.Join(missing, "data_batch_4.bin") + ": no such file or directory"},
		{"no such path", []string{"dataset", "inspect", filepath.Join(root, "nope")},
			"dataset not found: " + filepath.Join(root, "nope") + ": no such file or directory"},
		{"bad split", []string{"dataset", "inspect", "mnist", "--split", "val"},
			"--split val: want train or test"},
		// A built-in dataset is named as given, not by its file in the module cache.
		{"built-in at a resolution it cannot take", []string{"dataset", "inspect", "mnist", "--resolution", "7"},
			"ddpm: unsupported option: mnist: resolution 7 for 28x28 idx images (use 28, or a larger size by an even margin for padding)"},
		{"empty path", []string{"dataset", "inspect", ""},
			"ddpm: dataset not found: the dataset path is empty (give a folder or file of data, or one of mnist, fashion-mnist)"},
		// An existing --out is a command line to change, as sample --out's and export --out's
		// are (it was exit status 1, that of unreadable data).
		{"prepare over existing", []string{"dataset", "prepare", "mnist:test", "--out", mixed},
			"output exists: " + mixed + ": refusing to overwrite; choose a new --out"},
		// Checked before the source is decoded: the existing --out is named, not the bad image.
		{"prepare over existing, source undecoded", []string{"dataset", "prepare", unreadable, "--out", mixed},
			"output exists: " + mixed + ": refusing to overwrite; choose a new --out"},
		// Checked before the source is decoded: a place where no folder can be made.
		{"prepare into /proc", []string{"dataset", "prepare", unreadable, "--out", "/proc/ddpm-prep/x"},
			"output folder cannot be created: /proc/ddpm-prep/x: cannot create a folder in /proc (no such file or directory)"},
		{"prepare under a file", []string{"dataset", "prepare", unreadable, "--out", filepath.Join(idx, "x", "y")},
			"output folder cannot be created: " + filepath.Join(idx, "x", "y") + ": " + idx + " is a file, not a folder"},
	}...)
	for k, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runDDPM(t, c.args...)
			want := 1
			if k >= usage {
				want = 2
			}
			if code != want {
				t.Fatalf("exit status %d, want %d (stderr %q)", code, want, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ddpm: ") || strings.Contains(stderr, "goroutine") {
				t.Fatalf("stderr is not one ddpm: line: %q", stderr)
			}
			if !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr %q\nwant it to contain %q", lines[0], c.want)
			}
			if stdout != "" {
				t.Fatalf("stdout %q on failure", stdout)
			}
		})
	}
	// Nothing was overwritten: the folder prepare refused still holds exactly its two images.
	if ents, _ := os.ReadDir(mixed); len(ents) != 2 {
		t.Fatalf("refused prepare touched %s: %d entries", mixed, len(ents))
	}

	// With --skip-bad the bad value is skipped, counted and reported; exit 0.
	stdout, stderr, code := runDDPM(t, "dataset", "inspect", lsunJunk, "--resolution", "16", "--skip-bad")
	if code != 0 || !strings.Contains(stdout, "count        6\n") ||
		!strings.Contains(stdout, `skipped      1 undecodable (--skip-bad): key "ffff-junk"`) {
		t.Fatalf("--skip-bad: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	// Usage errors exit 2. An existing --preview file is refused untouched unless --force.
	grid := filepath.Join(root, "grid.png")
	os.WriteFile(grid, []byte("mine"), 0o644)
	if _, stderr, code := runDDPM(t, "dataset", "inspect", "mnist", "--preview", grid); code != 2 ||
		stderr != "ddpm: --preview "+grid+" already exists (give --force to replace it)\n" {
		t.Fatalf("preview over an existing file: exit %d, %q", code, stderr)
	}
	if b, _ := os.ReadFile(grid); string(b) != "mine" {
		t.Fatalf("refused inspect overwrote %s", grid)
	}
	if _, stderr, code := runDDPM(t, "dataset", "prepare", "mnist"); code != 2 || !strings.Contains(stderr, "--out DIR is required") {
		t.Fatalf("prepare without --out: exit %d, %q", code, stderr)
	}
}

// inspect prints the facts and a preview; prepare + inspect of the result agree on the fingerprint.
func TestCLIInspectAndPrepare(t *testing.T) {
	stdout, stderr, code := runDDPM(t, "dataset", "inspect", "mnist:test", "--preview", filepath.Join(t.TempDir(), "grid.png"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"format       mnist-idx\n", "split        test\n", "count        10000\n", "shape        1x32x32 (CHW)\n",
		"labels       0:980 1:1135 2:1032 3:1010 4:982 5:892 6:958 7:1028 8:974 9:1009\n", "fingerprint  sha256:"} {
		if !strings.Contains(stdout, want) {
			t.Fatalf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
	fp := stdout[strings.Index(stdout, "fingerprint  "):]
	fp = fp[:strings.Index(fp, "\n")]
	cifar := t.TempDir()
	writeCIFAR(t, cifar, 4)
	out := filepath.Join(t.TempDir(), "prep")
	if _, stderr, code := runDDPM(t, "dataset", "prepare", "mnist:test", "--out", out); code != 0 {
		t.Fatalf("prepare: exit %d: %s", code, stderr)
	}
	stdout, _, code = runDDPM(t, "dataset", "inspect", out)
	if code != 0 || !strings.Contains(stdout, fp+"\n") || !strings.Contains(stdout, "format       prepared\n") {
		t.Fatalf("inspect of prepared: exit %d\n%s\nwant %s", code, stdout, fp)
	}
	// A corrupted shard fails inspect with the shard's name.
	shard := filepath.Join(out, "shard-00000.bin")
	b, _ := os.ReadFile(shard)
	b[5000] ^= 0x80
	os.WriteFile(shard, b, 0o644)
	_, stderr, code = runDDPM(t, "dataset", "inspect", out)
	if code != 1 || !strings.HasPrefix(stderr, "ddpm: integrity check failed: "+shard+": sha256 ") {
		t.Fatalf("corrupted shard: exit %d, %q", code, stderr)
	}
}

// A folder of non-square images (all one size, so not "mixed") at their native size is refused
// by `ddpm dataset inspect` with one line naming the first image and its size, exit 1: the
// U-Net trains on square images, and it used to be accepted as 10x6 data. A resolution opens it
// (center-cropped); --skip-bad does not make it square.
func TestCLINonSquareFolderRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wide")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "a.png"), []byte("\x89PNG\r\n\x1a\n garbage"), 0o644)
	for i, name := range []string{"b.png", "c.png"} {
		os.WriteFile(filepath.Join(dir, name), encodePNG(t, pattern(10, 6, i)), 0o644)
	}
	want := "ddpm: non-square images: " + filepath.Join(dir, "b.png") +
		" is 10x6; training needs square images: pass a resolution to center-crop and resize all (--resolution N of ddpm dataset inspect/prepare; to train, prepare the folder with it and train on the prepared folder)\n"
	stdout, stderr, code := runDDPM(t, "dataset", "inspect", dir, "--skip-bad")
	if code != 1 || stderr != want || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr\n%q\nwant\n%q", code, stdout, stderr, want)
	}
	if _, err := Open(dir, Options{SkipBad: true}); !errors.Is(err, ErrNotSquare) {
		t.Fatalf("Open: %v, want ErrNotSquare", err)
	}
	stdout, stderr, code = runDDPM(t, "dataset", "inspect", dir, "--skip-bad", "--resolution", "6")
	if code != 0 || !strings.Contains(stdout, "count        2\n") {
		t.Fatalf("--resolution 6: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}
