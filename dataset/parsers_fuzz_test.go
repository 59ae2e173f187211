package dataset

// Fuzz targets for the parsers of the raw dataset formats (issue 13). Run briefly in `make test`
// (make fuzz-short) and at length in `make fuzz`. Each target checks one property: a hostile or
// damaged input returns an error wrapping the package's sentinels, never a panic, and an accepted
// input yields records whose shapes and contents match what the file declares.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"image"
	"image/jpeg"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// idxBytes builds an idx file: magic, sizes, data.
func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magic)
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, data...)
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// isSentinel reports whether err wraps one of the package's documented sentinels.
func isSentinel(err error) bool {
	for _, s := range []error{ErrNotFound, ErrUnknownFormat, ErrFormat, ErrDecode, ErrEmpty, ErrShape, ErrNotSquare, ErrIntegrity, ErrOption} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// FuzzIdx feeds an idx images file (plain or gzip) to OpenMNIST. An accepted file must hold exactly
// n*rows*cols data bytes (computed without overflow), and its first and last records must read.
func FuzzIdx(f *testing.F) {
	img := make([]byte, 2*28*28)
	for i := range img {
		img[i] = byte(i * 7)
	}
	f.Add(idxBytes(idxImagesMagic, []uint32{2, 28, 28}, img), int8(0))
	f.Add(gzipBytes(idxBytes(idxImagesMagic, []uint32{2, 28, 28}, img)), int8(0))
	f.Add(idxBytes(idxImagesMagic, []uint32{1, 4, 4}, img[:16]), int8(8))
	f.Add(idxBytes(idxImagesMagic, []uint32{3, 2, 5}, img[:30]), int8(0))
	f.Add(idxBytes(idxLabelsMagic, []uint32{2}, []byte{1, 2}), int8(0))
	f.Add(idxBytes(idxImagesMagic, []uint32{1 << 22, 1 << 21, 1 << 21}, nil), int8(0)) // product 2^64
	f.Add([]byte{0x1f, 0x8b, 0, 0}, int8(0))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte, res int8) {
		p := filepath.Join(dir, "images-idx3-ubyte")
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		ds, err := OpenMNIST(p, "", Options{Resolution: int(res)})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		raw := file
		if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("accepted a gzip stream that does not open: %v", err)
			}
			var buf bytes.Buffer
			buf.ReadFrom(zr)
			raw = buf.Bytes()
		}
		n, rows, cols := binary.BigEndian.Uint32(raw[4:]), binary.BigEndian.Uint32(raw[8:]), binary.BigEndian.Uint32(raw[12:])
		want := new(big.Int).Mul(big.NewInt(int64(n)), new(big.Int).Mul(big.NewInt(int64(rows)), big.NewInt(int64(cols))))
		if got := int64(len(raw) - 16); want.Cmp(big.NewInt(got)) != 0 {
			t.Fatalf("accepted %d x %d x %d images (%v bytes) from %d data bytes", n, rows, cols, want, got)
		}
		c, h, w := ds.Shape()
		if ds.Len() != int(n) || c != 1 || h < int(rows) || w < int(cols) {
			t.Fatalf("Len %d Shape %d,%d,%d for a %dx%dx%d file", ds.Len(), c, h, w, n, rows, cols)
		}
		if c*h*w > 1<<20 {
			return // valid but too large to read in a fuzz iteration
		}
		px := make([]uint8, c*h*w)
		for _, i := range []int{0, ds.Len() - 1} {
			if err := ds.(Pixeler).Pixels(i, px); err != nil {
				t.Fatalf("record %d of an accepted file: %v", i, err)
			}
		}
	})
}

// FuzzCIFAR feeds a CIFAR-10 batch file to the record check and the reader.
func FuzzCIFAR(f *testing.F) {
	rec := make([]byte, 2*cifarRecord)
	rec[0], rec[cifarRecord] = 3, 9
	f.Add(rec)
	f.Add(rec[:cifarRecord])
	f.Add(rec[:cifarRecord+5])
	f.Add([]byte{10})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := checkCIFARFile(b, "fuzz.bin"); err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error wraps no ErrFormat: %v", err)
			}
			return
		}
		ds, err := newCIFAR(b, "cifar10/fuzz", "fuzz.bin", Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Len() != len(b)/cifarRecord || ds.Len() == 0 {
			t.Fatalf("Len %d for %d bytes", ds.Len(), len(b))
		}
		px := make([]uint8, cifarPixels)
		for i := range ds.Len() {
			if l := ds.Label(i); l < 0 || l > 9 {
				t.Fatalf("record %d: label %d", i, l)
			}
			if err := ds.(Pixeler).Pixels(i, px); err != nil || !bytes.Equal(px, b[i*cifarRecord+1:(i+1)*cifarRecord]) {
				t.Fatalf("record %d: pixels differ from the file (err %v)", i, err)
			}
		}
	})
}

// FuzzCIFARTar feeds a cifar-10-binary.tar.gz to the archive reader (test split).
func FuzzCIFARTar(f *testing.F) {
	mk := func(members map[string][]byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for name, b := range members {
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
		}
		tw.Close()
		zw.Close()
		return buf.Bytes()
	}
	rec := make([]byte, cifarRecord)
	rec[0] = 4
	f.Add(mk(map[string][]byte{"cifar-10-batches-bin/test_batch.bin": rec}))
	f.Add(mk(map[string][]byte{"cifar-10-batches-bin/test_batch.bin": rec[:100]}))
	f.Add(mk(map[string][]byte{"other.txt": []byte("x")}))
	f.Add([]byte{0x1f, 0x8b})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "cifar-10-binary.tar.gz")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ds, err := openCIFARTar(p, Options{Split: "test"})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if ds.Len() == 0 {
			t.Fatal("accepted an archive with no records")
		}
		px := make([]uint8, cifarPixels)
		if err := ds.(Pixeler).Pixels(ds.Len()-1, px); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzLSUNValue feeds one LMDB value (WebP, JPEG or PNG bytes) to the LSUN decoder at 32x32.
func FuzzLSUNValue(f *testing.F) {
	png := encodePNG(f, pattern(40, 30, 1))
	f.Add(png)
	var jb bytes.Buffer
	jpeg.Encode(&jb, pattern(17, 33, 2), &jpeg.Options{Quality: 80})
	f.Add(jb.Bytes())
	if _, err := exec.LookPath("cwebp"); err == nil {
		f.Add(cwebp(f, png, false))
		f.Add(cwebp(f, png, true))
	}
	f.Add(encodePNG(f, image.NewGray(image.Rect(0, 0, 5, 9))))
	f.Add([]byte("RIFF\x00\x00\x00\x00WEBPVP8 "))
	f.Fuzz(func(t *testing.T, val []byte) {
		// Hostile headers may declare huge images; decoding them would measure the decoder's
		// allocation, not our code. DecodeConfig is what a hardened reader checks first.
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(val)); err == nil && cfg.Width*cfg.Height > 1<<22 {
			t.Skip()
		}
		r := &lsunReader{dir: "fuzz", res: 32, d: 3 * 32 * 32}
		dst := make([]uint8, r.d)
		if err := r.decode([]byte("key"), val, dst); err != nil && !errors.Is(err, ErrDecode) {
			t.Fatalf("error wraps no ErrDecode: %v", err)
		}
	})
}
