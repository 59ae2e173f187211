// Package dataset reads the training images of the DDPM cluster exactly as users download them
// (MNIST/Fashion-MNIST idx, CIFAR-10 binary, LSUN LMDB, folders of PNG/JPEG) or as prepared by
// `ddpm dataset prepare`, and holds the global sampler that makes a run independent of how many
// trainers read it (DESIGN.md sections 3 and 7).
//
// Every reader produces the same canonical content: per record a label (or -1) and a uint8 image
// in CHW order at the model resolution (Pixels). Image maps it to float32 in [-1, 1] as x/127.5-1,
// the scaling of the original DDPM code. The Fingerprint is the sha256 of that canonical content,
// so a raw source and its prepared shards at the same resolution have the same fingerprint.
//
// Datasets are safe for concurrent use by several goroutines.
package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"ddpm/internal/localrun"
	"ddpm/internal/sniff"
)

// Operational failures. Each error returned by this package wraps exactly one of these and reads
// as one line naming the file (and the record or key) at fault.
var (
	// ErrNotFound: the named dataset, file or split does not exist.
	ErrNotFound = errors.New("dataset not found")
	// ErrUnknownFormat: the path is none of the formats this package reads.
	ErrUnknownFormat = errors.New("unrecognized dataset format")
	// ErrFormat: a file's structure is wrong (bad magic number, truncated or mis-sized file,
	// inconsistent header).
	ErrFormat = errors.New("malformed data")
	// ErrDecode: an image (file or LMDB value) is empty or cannot be decoded.
	ErrDecode = errors.New("undecodable image")
	// ErrEmpty: the source holds no images.
	ErrEmpty = errors.New("no images")
	// ErrShape: images of different sizes where one fixed size is required.
	ErrShape = errors.New("mixed image sizes")
	// ErrNotSquare: a folder's images are not square at their native size (resolution 0); the
	// U-Net trains on square images only.
	ErrNotSquare = errors.New("non-square images")
	// ErrIntegrity: prepared shards whose sha256 or size differs from their index.
	ErrIntegrity = errors.New("integrity check failed")
	// ErrOption: an option the format cannot honour (e.g. a resolution MNIST does not support).
	ErrOption = errors.New("unsupported option")
	// ErrNoSplit: a split asked of a format that has none (an image folder, an LSUN LMDB: all
	// their images are one set). Such an error is also ErrOption under errors.Is.
	ErrNoSplit = errors.New("format has no splits")
)

// unreadable returns, when err (of opening, reading or listing path p) is a permission refusal,
// the one line for data that exists but that this user may not read, naming the path refused (the
// *fs.PathError's, a subfolder perhaps, else p) and wrapping os.ErrPermission rather than
// ErrNotFound: the data is there. It returns nil for any other err.
//
//	/srv/imgs: permission denied (this user may not read it: give it read access)
func unreadable(p string, err error) error {
	if !errors.Is(err, fs.ErrPermission) {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path != "" {
		p = pe.Path
	}
	return fmt.Errorf("%s: %w (this user may not read it: give it read access)", p, os.ErrPermission)
}

// noSplitError is the one line for a split asked of a source without splits; it is ErrNoSplit
// and ErrOption under errors.Is, and reads as an ErrOption error.
type noSplitError struct{ source, kind, split string }

func (e noSplitError) Error() string {
	return fmt.Sprintf("%s: %s: %s has no %s split (all its images are one set; give no split)", ErrOption, e.source, e.kind, e.split)
}

func (e noSplitError) Is(target error) bool { return target == ErrNoSplit || target == ErrOption }

// checkNoSplit refuses a split the user asked of a source of kind (e.g. "an image folder") that
// has none; the train split that Open defaults to is the whole set.
func checkNoSplit(source, kind string, opts Options) error {
	if opts.splitAsked && opts.Split != "train" {
		return noSplitError{source, kind, opts.Split}
	}
	return nil
}

// Dataset is a read-only, indexable set of images. Record order is fixed by the source (file
// order, LMDB key order, sorted paths), so index i means the same image on every machine.
type Dataset interface {
	// Len is the number of records.
	Len() int
	// Shape is the image shape after preprocessing: channels, height, width.
	Shape() (c, h, w int)
	// Image writes record i into dst as CHW float32 in [-1, 1] (x/127.5 - 1), without flipping.
	// It panics if i is out of range or len(dst) != c*h*w; it returns an error (wrapping one of
	// the package's sentinels) when the record cannot be read or decoded.
	Image(i int, dst []float32) error
	// Label is record i's class, or -1 when the format has no labels.
	Label(i int) int
	// Fingerprint is the lowercase hex sha256 of the canonical content (see the package doc and
	// CanonicalHash); stable across machines, runs and raw-vs-prepared storage.
	Fingerprint() string
	// Name identifies the data, e.g. "mnist/train", "cifar10/test", "lsun/church_outdoor_train_lmdb".
	Name() string
}

// Pixeler is implemented by every Dataset of this package: the canonical uint8 CHW record, before
// the [-1, 1] scaling. It panics if i is out of range or len(dst) != c*h*w.
type Pixeler interface {
	Pixels(i int, dst []uint8) error
}

// Options tune Open. The zero value asks for each format's default.
type Options struct {
	// Resolution is the output height and width. 0 means the format's default: 32 for MNIST and
	// Fashion-MNIST (28x28 padded, see OpenMNIST), 32 for CIFAR-10, 256 for LSUN (the paper's),
	// the images' own size for folders (then all must have the same square size: ErrNotSquare
	// names the first image, in path order, that is not square, ErrShape the first of another size).
	Resolution int
	// Split selects "train" (default) or "test" where the format has splits; a ":test" or
	// ":train" suffix on the spec does the same.
	Split string
	// SkipBad drops undecodable LMDB values and folder images instead of failing; they are
	// counted and listed in Info.Skipped.
	SkipBad bool
	// Channels is what the model reading the data takes: 1, 3, or 0 for the source's own count.
	// It decides only for an image folder whose images are all stored as greyscale (a WebP, a
	// colour-mode JPEG or an RGB or RGBA PNG: of neutral chroma, R = G = B, at every pixel that
	// is not fully transparent, see greyHeader), which opens as 1 x H x W with 0 or 1 and with 3
	// as its grey level replicated into three equal planes (torchvision's
	// Grayscale(num_output_channels=3)), byte for byte, and so fingerprint for fingerprint, what
	// versions before the 1-channel grey folder read (Info.Grey reports such a folder). Every
	// other source has the channels of its format (MNIST 1, CIFAR-10 and LSUN 3, a folder with a
	// colour image 3, a prepared folder those it was prepared with) whatever Channels
	// says. Other values are ErrOption.
	Channels int

	// splitAsked: Split (or the spec's suffix) named the split; false when Open defaulted it
	// to "train". Only an asked split is checked against the split a file says it holds.
	splitAsked bool
	// subject is what an error about the options names the source by when the user did not
	// give its path: a built-in dataset's name ("mnist"), not its file in the module cache.
	subject string
}

// Info describes a dataset for `ddpm dataset inspect` and the run log.
type Info struct {
	Format      string   // "mnist-idx", "cifar10-binary", "lsun-lmdb", "image-folder", "prepared"
	Name        string   // as Dataset.Name
	Split       string   // "train", "test", or "" when the format has none
	Source      string   // the file or folder read
	Count       int      // records
	C, H, W     int      // shape after preprocessing
	Labeled     bool     // whether Label returns classes
	Fingerprint string   // as Dataset.Fingerprint
	Skipped     []string // records dropped by Options.SkipBad, as "file" or "key" names
	Grey        bool     // an image folder whose every image is stored as greyscale (see Options.Channels)
}

// Describe returns ds's Info. It panics if ds was not made by this package.
func Describe(ds Dataset) Info {
	s, ok := ds.(*set)
	if !ok {
		panic("dataset: Describe: not a dataset of this package")
	}
	c, h, w := s.Shape()
	return Info{
		Format: s.format, Name: s.name, Split: s.split, Source: s.source, Count: s.n,
		C: c, H: h, W: w, Labeled: s.labels != nil, Fingerprint: s.Fingerprint(),
		Skipped: append([]string(nil), s.skipped...), Grey: s.grey,
	}
}

// reader is what a format supplies: the canonical uint8 CHW pixels of record i.
type reader interface {
	pixels(i int, dst []uint8) error
}

// set implements Dataset over a format's reader.
type set struct {
	r             reader
	n             int
	c, h, w       int
	labels        []int32 // nil: unlabeled
	name, format  string
	split, source string
	skipped       []string
	grey          bool // an all-greyscale image folder (Info.Grey)

	fpOnce sync.Once
	fp     string // precomputed (prepared, eager scans) or computed on first use
	fpErr  error
	bufs   sync.Pool // *[]uint8 of c*h*w
}

func (s *set) Len() int             { return s.n }
func (s *set) Shape() (c, h, w int) { return s.c, s.h, s.w }
func (s *set) Name() string         { return s.name }

func (s *set) Label(i int) int {
	s.check(i)
	if s.labels == nil {
		return -1
	}
	return int(s.labels[i])
}

func (s *set) check(i int) {
	if i < 0 || i >= s.n {
		panic(fmt.Sprintf("dataset: index %d out of range [0, %d)", i, s.n))
	}
}

func (s *set) Pixels(i int, dst []uint8) error {
	s.check(i)
	if len(dst) != s.c*s.h*s.w {
		panic(fmt.Sprintf("dataset: Pixels: len(dst) = %d, want %d", len(dst), s.c*s.h*s.w))
	}
	return s.r.pixels(i, dst)
}

func (s *set) Image(i int, dst []float32) error {
	s.check(i)
	d := s.c * s.h * s.w
	if len(dst) != d {
		panic(fmt.Sprintf("dataset: Image: len(dst) = %d, want %d", len(dst), d))
	}
	bp, _ := s.bufs.Get().(*[]uint8)
	if bp == nil || len(*bp) != d {
		b := make([]uint8, d)
		bp = &b
	}
	defer s.bufs.Put(bp)
	if err := s.r.pixels(i, *bp); err != nil {
		return err
	}
	ToFloat(dst, *bp)
	return nil
}

// Fingerprint computes the canonical hash on first use for formats that hold their records in
// memory (idx, CIFAR-10); LMDB, folders and prepared shards have it from Open. A record that
// cannot be read has already failed Open for those, so the lazy path cannot fail on valid input;
// should it fail anyway (a file changed underneath), the result is "unreadable: <error>", which
// never equals a real fingerprint.
func (s *set) Fingerprint() string {
	s.fpOnce.Do(func() {
		if s.fp != "" {
			return
		}
		s.fp, s.fpErr = CanonicalHash(s)
		if s.fpErr != nil {
			s.fp = "unreadable: " + s.fpErr.Error()
		}
	})
	return s.fp
}

// ToFloat maps uint8 pixels to [-1, 1] as x/127.5 - 1 (the original DDPM's scaling; 0 -> -1,
// 255 -> 1 exactly). It panics if the lengths differ.
func ToFloat(dst []float32, src []uint8) {
	if len(dst) != len(src) {
		panic("dataset: ToFloat: length mismatch")
	}
	for i, v := range src {
		dst[i] = toFloatTable[v]
	}
}

// toFloatTable[v] = float32(v)/127.5 - 1, rounded exactly as that expression (a table, not a
// multiply by 1/127.5, which would round differently for some v).
var toFloatTable = func() (t [256]float32) {
	for v := range t {
		t[v] = float32(v)/127.5 - 1
	}
	return t
}()

// hashHeader starts the canonical stream; the version changes if the stream's layout does.
const hashHeader = "ddpm-dataset-content/v1"

// CanonicalHash is the fingerprint of a dataset: sha256 over the line
// "ddpm-dataset-content/v1 c h w\n", then for each record in order its label as a little-endian
// int32 (-1 when unlabeled) followed by its uint8 CHW pixels.
func CanonicalHash(ds Dataset) (string, error) {
	p, ok := ds.(Pixeler)
	if !ok {
		panic("dataset: CanonicalHash: dataset has no Pixels method")
	}
	c, h, w := ds.Shape()
	hw := newHash(c, h, w)
	buf := make([]uint8, c*h*w)
	for i := 0; i < ds.Len(); i++ {
		if err := p.Pixels(i, buf); err != nil {
			return "", err
		}
		hw.add(ds.Label(i), buf)
	}
	return hw.hex(), nil
}

// contentHash accumulates the canonical stream record by record.
type contentHash struct {
	h   hashWriter
	lbl [4]byte
}

type hashWriter interface {
	Write([]byte) (int, error)
	Sum([]byte) []byte
}

func newHash(c, h, w int) *contentHash {
	ch := &contentHash{h: sha256.New()}
	fmt.Fprintf(ch.h, "%s %d %d %d\n", hashHeader, c, h, w)
	return ch
}

func (ch *contentHash) add(label int, pix []uint8) {
	binary.LittleEndian.PutUint32(ch.lbl[:], uint32(int32(label)))
	ch.h.Write(ch.lbl[:])
	ch.h.Write(pix)
}

func (ch *contentHash) hex() string { return hex.EncodeToString(ch.h.Sum(nil)) }

// Open opens a dataset by spec:
//
//	"mnist", "mnist:test", "fashion-mnist", "fashion-mnist:test"  the built-in sources
//	a CIFAR-10 folder (data_batch_1..5.bin, test_batch.bin) or cifar-10-binary.tar.gz
//	an LSUN LMDB directory (data.mdb)
//	a prepared directory (index.json, from `ddpm dataset prepare`)
//	an idx images file (train-images-idx3-ubyte[.gz]; labels from the matching labels file)
//	a folder of idx files (train- and t10k-images-idx3-ubyte[.gz], as Debian's
//	  dataset-fashion-mnist installs them in /usr/share/datasets/fashion-mnist): one split each
//	a folder of PNG/JPEG/WebP images (recursive, sorted by path)
//
// A ":train" or ":test" suffix selects the split, as Options.Split does. Image folders and LSUN
// LMDBs have no splits: their images are the training set, and a test split asked of them is
// ErrNoSplit. Errors wrap ErrNotFound, ErrUnknownFormat, ErrFormat, ErrDecode, ErrEmpty,
// ErrShape, ErrNotSquare, ErrIntegrity, ErrOption or ErrNoSplit (with ErrOption); a path this
// user may not read (or search) wraps os.ErrPermission instead ("P: permission denied (...)").
func Open(spec string, opts Options) (Dataset, error) {
	split := opts.Split
	for _, sfx := range []string{":train", ":test"} {
		if strings.HasSuffix(spec, sfx) {
			if split != "" && split != sfx[1:] {
				return nil, fmt.Errorf("%w: %s: the split %q in the name conflicts with the split %q asked for", ErrOption, spec, sfx[1:], split)
			}
			spec, split = strings.TrimSuffix(spec, sfx), sfx[1:]
		}
	}
	opts.splitAsked = split != ""
	if split == "" {
		split = "train"
	}
	if split != "train" && split != "test" {
		return nil, fmt.Errorf("%w: %s: split %q (want train or test)", ErrOption, spec, split)
	}
	opts.Split = split
	if opts.Resolution < 0 {
		return nil, fmt.Errorf("%w: %s: resolution %d", ErrOption, spec, opts.Resolution)
	}
	if opts.Channels != 0 && opts.Channels != 1 && opts.Channels != 3 {
		return nil, fmt.Errorf("%w: %s: %d channels (want 1 or 3)", ErrOption, spec, opts.Channels)
	}
	switch spec {
	case "mnist", "fashion-mnist":
		return openBuiltinMNIST(spec, opts)
	case "":
		return nil, fmt.Errorf("%w: the dataset path is empty (give a folder or file of data, or one of mnist, fashion-mnist)", ErrNotFound)
	}
	st, err := os.Stat(spec)
	if err != nil {
		if perm := unreadable(spec, err); perm != nil {
			return nil, perm // a folder above it this user may not search
		}
		if name, sfx, ok := strings.Cut(spec, ":"); ok && (name == "mnist" || name == "fashion-mnist") {
			// mnist:tset, fashion-mnist:Test: the built-in name with a split it has not.
			return nil, fmt.Errorf("%w: %s: split %q (want %s:train or %s:test)", ErrOption, spec, sfx, name, name)
		}
		return nil, fmt.Errorf("%w: %s: no such file or directory (and not one of mnist, fashion-mnist)", ErrNotFound, spec)
	}
	if !st.IsDir() {
		switch {
		case strings.HasSuffix(spec, ".tar.gz") || strings.HasSuffix(spec, ".tgz"):
			return openCIFARTar(spec, opts)
		case strings.Contains(filepath.Base(spec), "idx3"):
			return openIdxPath(spec, opts)
		case filepath.Base(spec) == "data.mdb":
			return openLSUN(filepath.Dir(spec), opts)
		case filepath.Base(spec) == indexName:
			return openPrepared(filepath.Dir(spec), opts)
		}
		if what := notDataFile(spec); what != "" {
			return nil, fmt.Errorf("%w: %s: %s", ErrUnknownFormat, spec, what)
		}
		return nil, fmt.Errorf("%w: %s: not an idx3 images file, a .tar.gz, data.mdb or %s", ErrUnknownFormat, spec, indexName)
	}
	if exists(filepath.Join(spec, indexName)) {
		return openPrepared(spec, opts)
	}
	if exists(filepath.Join(spec, "data.mdb")) {
		return openLSUN(spec, opts)
	}
	if dir, ok := cifarDir(spec); ok {
		return openCIFARDir(dir, opts)
	}
	if isIdxDir(spec) {
		return openIdxDir(spec, opts)
	}
	if what := localrun.FolderKind(spec); what != "" {
		return nil, fmt.Errorf("%w: %s: %s, not a dataset; give the data itself (a preset's name, or the folder of the images)", ErrUnknownFormat, spec, what)
	}
	return openFolder(spec, opts)
}

// notDataFile says what the file p is when it is no dataset file but something a user may give
// by mistake: an idx labels file (by its name), one image (a folder of them is a dataset, unless
// it is a ddpm local run's folder, whose samples.png and loss.png these are), a checkpoint file,
// safetensors weights or a text file (a run.yaml, a loss.csv; by their first 4 KiB); "" otherwise.
func notDataFile(p string) string {
	if base := filepath.Base(p); strings.Contains(base, "labels-idx1") {
		return "an idx labels file, not images (give " + filepath.Join(filepath.Dir(p), strings.Replace(base, "labels-idx1", "images-idx3", 1)) + "; its labels are read beside it)"
	}
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	head := make([]byte, 4096)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	switch {
	case sniff.Image(head):
		if kind := localrun.FolderKind(filepath.Dir(p)); kind != "" {
			// samples.png, loss.png of a run: its folder is no dataset either.
			return "one image (an output in " + filepath.Dir(p) + ", " + kind + "), not a dataset; give the data itself (a preset's name, or the folder of the images)"
		}
		return "one image, not a dataset (a folder of images is one: give " + filepath.Dir(p) + ")"
	case sniff.Checkpoint(head):
		return "a checkpoint file (bbolt), not a dataset"
	case sniff.Safetensors(head):
		return "safetensors weights, not a dataset"
	case sniff.Text(head, n == cap(head)): // a read that filled head may end inside a character
		return "a text file, not a dataset"
	}
	return ""
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Verify re-reads ds in full and checks its content against its fingerprint: for prepared
// shards it recomputes each shard's sha256 and the canonical hash; for other formats it
// recomputes the canonical hash. Errors wrap ErrIntegrity or the reader's sentinel.
func Verify(ds Dataset) error {
	s, ok := ds.(*set)
	if !ok {
		panic("dataset: Verify: not a dataset of this package")
	}
	if v, ok := s.r.(interface{ verify() error }); ok {
		if err := v.verify(); err != nil {
			return err
		}
	}
	got, err := CanonicalHash(s)
	if err != nil {
		return err
	}
	if want := s.Fingerprint(); got != want {
		return fmt.Errorf("%w: %s: content hash %s differs from the recorded fingerprint %s", ErrIntegrity, s.source, got, want)
	}
	return nil
}
