package dataset

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
)

// CIFAR-10 binary version, as distributed in cifar-10-binary.tar.gz (folder
// cifar-10-batches-bin/): each file holds records of 1 label byte (0..9) followed by 3072 pixel
// bytes, the 32x32 red plane, then green, then blue, each row-major. That is already CHW with
// channels R, G, B, so a record's pixels are copied as they are.
const (
	cifarSide   = 32
	cifarPixels = 3 * cifarSide * cifarSide
	cifarRecord = 1 + cifarPixels
)

func cifarFiles(split string) []string {
	if split == "test" {
		return []string{"test_batch.bin"}
	}
	return []string{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
}

// cifarDir reports whether dir (or its cifar-10-batches-bin subfolder) holds CIFAR-10 batches.
func cifarDir(dir string) (string, bool) {
	for _, d := range []string{dir, filepath.Join(dir, "cifar-10-batches-bin")} {
		if exists(filepath.Join(d, "data_batch_1.bin")) || exists(filepath.Join(d, "test_batch.bin")) {
			return d, true
		}
	}
	return "", false
}

// cifarReader holds the records of a split in file order (train: 50,000 records, 154 MB).
type cifarReader struct{ recs []byte }

func (r *cifarReader) pixels(i int, dst []uint8) error {
	copy(dst, r.recs[i*cifarRecord+1:(i+1)*cifarRecord])
	return nil
}

func newCIFAR(recs []byte, name, source string, opts Options) (Dataset, error) {
	if opts.Resolution != 0 && opts.Resolution != cifarSide {
		return nil, fmt.Errorf("%w: %s: CIFAR-10 is %dx%d; resolution %d is not supported (prepare a resized copy from an image folder instead)",
			ErrOption, source, cifarSide, cifarSide, opts.Resolution)
	}
	n := len(recs) / cifarRecord
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(recs[i*cifarRecord])
	}
	return &set{
		r: &cifarReader{recs: recs}, n: n, c: 3, h: cifarSide, w: cifarSide, labels: labels,
		name: name, format: "cifar10-binary", split: opts.Split, source: source,
	}, nil
}

// checkCIFARFile validates one batch file's bytes; where names it in messages.
func checkCIFARFile(b []byte, where string) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: %s: empty file", ErrFormat, where)
	}
	if rem := len(b) % cifarRecord; rem != 0 {
		return fmt.Errorf("%w: %s: %d bytes is not a whole number of %d-byte records (1 label + 3x32x32 pixels): record %d is cut short at %d bytes",
			ErrFormat, where, len(b), cifarRecord, len(b)/cifarRecord, rem)
	}
	for i := 0; i < len(b); i += cifarRecord {
		if l := b[i]; l > 9 {
			return fmt.Errorf("%w: %s: record %d: label %d is not a CIFAR-10 class (0..9); not a CIFAR-10 binary file?",
				ErrFormat, where, i/cifarRecord, l)
		}
	}
	return nil
}

func openCIFARDir(dir string, opts Options) (Dataset, error) {
	var recs []byte
	for _, f := range cifarFiles(opts.Split) {
		p := filepath.Join(dir, f)
		b, err := os.ReadFile(p)
		if perm := unreadable(p, err); perm != nil {
			return nil, perm
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v (CIFAR-10 %s split needs %v)", ErrNotFound, p, unwrapPathError(err), opts.Split, cifarFiles(opts.Split))
		}
		if err := checkCIFARFile(b, p); err != nil {
			return nil, err
		}
		recs = append(recs, b...)
	}
	return newCIFAR(recs, "cifar10/"+opts.Split, dir, opts)
}

// maxCIFARFile bounds a CIFAR-10 batch member read from an archive (2^18 records, 805 MB; the
// real ones hold 10000 records, 30.7 MB), so a member declaring terabytes is refused before it is
// inflated into memory.
const maxCIFARFile = cifarRecord << 18

// openCIFARTar reads the split's batch files straight from cifar-10-binary.tar.gz, matching
// members by base name wherever they sit in the archive.
func openCIFARTar(p string, opts Options) (Dataset, error) {
	f, err := os.Open(p)
	if perm := unreadable(p, err); perm != nil {
		return nil, perm
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, p, unwrapPathError(err))
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a gzip file: %v", ErrFormat, p, err)
	}
	want := map[string][]byte{}
	for _, name := range cifarFiles(opts.Split) {
		want[name] = nil
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: reading the archive: %v (truncated download?)", ErrFormat, p, err)
		}
		base := path.Base(h.Name)
		if _, ok := want[base]; !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > maxCIFARFile {
			return nil, fmt.Errorf("%w: %s: member %s declares %d bytes, more than %d (%d records; a CIFAR-10 batch file holds 10000); not a CIFAR-10 archive?",
				ErrFormat, p, h.Name, h.Size, maxCIFARFile, maxCIFARFile/cifarRecord)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: member %s: %v (truncated download?)", ErrFormat, p, h.Name, err)
		}
		if err := checkCIFARFile(b, p+":"+h.Name); err != nil {
			return nil, err
		}
		want[base] = b
	}
	var recs []byte
	for _, name := range cifarFiles(opts.Split) {
		if want[name] == nil {
			return nil, fmt.Errorf("%w: %s: the archive has no %s (CIFAR-10 %s split needs %v)", ErrNotFound, p, name, opts.Split, cifarFiles(opts.Split))
		}
		recs = append(recs, want[name]...)
	}
	return newCIFAR(recs, "cifar10/"+opts.Split, p, opts)
}
