package dataset

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"ddpm/dataset/lmdb/lmdbtest"
)

// cifarPixel is the test pattern: record r, channel ch (0 R, 1 G, 2 B), row y, column x.
func cifarPixel(r, ch, y, x int) uint8 { return uint8(r*37 + ch*85 + y*5 + x*3) }

// writeCIFAR writes the six batch files with perFile records each into dir, in the distributed
// layout; record r (counted over the train files, test records from 1000) has label r%10.
func writeCIFAR(t testing.TB, dir string, perFile int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for f, name := range append(cifarFiles("train"), "test_batch.bin") {
		var b []byte
		for k := 0; k < perFile; k++ {
			r := f*perFile + k
			if name == "test_batch.bin" {
				r = 1000 + k
			}
			b = append(b, byte(r%10))
			for ch := 0; ch < 3; ch++ {
				for y := 0; y < 32; y++ {
					for x := 0; x < 32; x++ {
						b = append(b, cifarPixel(r, ch, y, x))
					}
				}
			}
		}
		files[name] = b
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func writeTarGz(t testing.TB, path string, members map[string][]byte, order []string) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "cifar-10-batches-bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, name := range order {
		b := members[name]
		tw.WriteHeader(&tar.Header{Name: "cifar-10-batches-bin/" + name, Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCIFARFolderAndTarGzExactCHW(t *testing.T) {
	dir := t.TempDir()
	const per = 6
	files := writeCIFAR(t, dir, per)
	tgz := filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz")
	writeTarGz(t, tgz, files, []string{"test_batch.bin", "data_batch_3.bin", "data_batch_1.bin", "data_batch_5.bin", "data_batch_2.bin", "data_batch_4.bin"})
	for _, split := range []string{"train", "test"} {
		var fps []string
		for _, spec := range []string{dir, tgz, dir + ":" + split} {
			ds, err := Open(spec, Options{Split: map[bool]string{true: "", false: split}[spec == dir+":"+split]})
			if err != nil {
				t.Fatal(err)
			}
			n := map[string]int{"train": 5 * per, "test": per}[split]
			if ds.Len() != n || ds.Name() != "cifar10/"+split {
				t.Fatalf("%s %s: Len %d Name %q", spec, split, ds.Len(), ds.Name())
			}
			if c, h, w := ds.Shape(); c != 3 || h != 32 || w != 32 {
				t.Fatalf("Shape %d %d %d", c, h, w)
			}
			img := make([]float32, 3*32*32)
			for i := 0; i < n; i++ {
				r := i
				if split == "test" {
					r = 1000 + i
				}
				if ds.Label(i) != r%10 {
					t.Fatalf("%s record %d label %d, want %d", spec, i, ds.Label(i), r%10)
				}
				if err := ds.Image(i, img); err != nil {
					t.Fatal(err)
				}
				for ch := 0; ch < 3; ch++ {
					for y := 0; y < 32; y++ {
						for x := 0; x < 32; x++ {
							want := float32(cifarPixel(r, ch, y, x))/127.5 - 1
							if got := img[ch*1024+y*32+x]; got != want {
								t.Fatalf("%s record %d (c%d,y%d,x%d) = %v, want %v", spec, i, ch, y, x, got, want)
							}
						}
					}
				}
			}
			fps = append(fps, ds.Fingerprint())
		}
		if fps[0] != fps[1] || fps[0] != fps[2] {
			t.Fatalf("%s: folder and tar.gz fingerprints differ: %v", split, fps)
		}
	}
	// The extracted layout (a parent folder holding cifar-10-batches-bin/) is found too.
	parent := t.TempDir()
	os.Rename(dir, filepath.Join(parent, "cifar-10-batches-bin"))
	if ds, err := Open(parent, Options{}); err != nil || ds.Len() != 5*per {
		t.Fatalf("parent folder: %v", err)
	}
}

// A pure red pixel reads as R = 1, G = B = -1: the planes are R, G, B in that order.
func TestCIFARPlaneOrder(t *testing.T) {
	dir := t.TempDir()
	rec := make([]byte, cifarRecord)
	rec[0] = 3
	for i := 0; i < 1024; i++ {
		rec[1+i] = 255 // R plane
	}
	rec[1+1024+5] = 128 // one green pixel at (0, 5)
	for _, f := range append(cifarFiles("train"), "test_batch.bin") {
		os.WriteFile(filepath.Join(dir, f), rec, 0o644)
	}
	ds, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]float32, 3072)
	ds.Image(0, img)
	if img[0] != 1 || img[1024] != -1 || img[2048] != -1 || img[1024+5] != float32(128)/127.5-1 {
		t.Fatalf("R %v G %v B %v G(0,5) %v", img[0], img[1024], img[2048], img[1024+5])
	}
}

// pattern is a deterministic RGB test image of w x h.
func pattern(w, h, seed int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x*7 + seed), uint8(y*11 + 3*seed), uint8((x+y)*5 + seed*seed), 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// cwebp encodes png bytes with Debian's cwebp (lossless when asked).
func cwebp(t testing.TB, pngBytes []byte, lossless bool) []byte {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.png"), filepath.Join(dir, "out.webp")
	os.WriteFile(in, pngBytes, 0o644)
	args := []string{"-quiet", "-exact", "-lossless", in, "-o", out}
	if !lossless {
		args = []string{"-quiet", "-q", "90", in, "-o", out}
	}
	if o, err := exec.Command("cwebp", args...).CombinedOutput(); err != nil {
		t.Fatalf("cwebp (Debian package webp): %v: %s", err, o)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cropCHW is the expected canonical pixels of the centred side x side crop of img (no resize).
func cropCHW(img *image.NRGBA, side int) []uint8 {
	b := img.Bounds()
	x0, y0 := (b.Dx()-side)/2, (b.Dy()-side)/2
	out := make([]uint8, 3*side*side)
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			c := img.NRGBAAt(x0+x, y0+y)
			out[y*side+x], out[side*side+y*side+x], out[2*side*side+y*side+x] = c.R, c.G, c.B
		}
	}
	return out
}

// writeLSUN makes an LSUN-style LMDB: keys are hex ids, values WebP (lossless and lossy) and JPEG.
func writeLSUN(t testing.TB, dir string, extra ...lmdbtest.Pair) ([]*image.NRGBA, map[int][]byte) {
	var imgs []*image.NRGBA
	jpegs := map[int][]byte{}
	var pairs []lmdbtest.Pair
	for i := 0; i < 6; i++ {
		img := pattern(40, 30, i) // landscape: the crop keeps columns 5..34
		imgs = append(imgs, img)
		var v []byte
		switch i % 3 {
		case 0, 1:
			v = cwebp(t, encodePNG(t, img), true)
		case 2:
			var b bytes.Buffer
			jpeg.Encode(&b, img, &jpeg.Options{Quality: 95})
			v = b.Bytes()
			jpegs[i] = v
		}
		pairs = append(pairs, lmdbtest.Pair{Key: []byte(fmt.Sprintf("%040x", i)), Value: v})
	}
	if err := lmdbtest.Write(dir, append(pairs, extra...)); err != nil {
		t.Fatal(err)
	}
	return imgs, jpegs
}

func TestLSUNWebPAndJPEGValues(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "church_outdoor_train_lmdb")
	imgs, jpegs := writeLSUN(t, dir)
	ds, err := Open(dir, Options{Resolution: 30})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Len() != 6 || ds.Label(0) != -1 || ds.Name() != "lsun/church_outdoor_train_lmdb" {
		t.Fatalf("Len %d Label %d Name %q", ds.Len(), ds.Label(0), ds.Name())
	}
	px := make([]uint8, 3*30*30)
	for i := 0; i < 6; i++ {
		if err := ds.(Pixeler).Pixels(i, px); err != nil {
			t.Fatal(err)
		}
		want := cropCHW(imgs[i], 30)
		if i%3 != 2 { // lossless WebP: pixel-exact
			if !slices.Equal(px, want) {
				t.Fatalf("record %d (lossless WebP) differs from the source's centre crop", i)
			}
			continue
		}
		// JPEG (4:2:0 chroma on a busy pattern): exactly what image/jpeg decodes, near the source.
		dec, err := jpeg.Decode(bytes.NewReader(jpegs[i]))
		if err != nil {
			t.Fatal(err)
		}
		ref := image.NewNRGBA(dec.Bounds())
		for y := 0; y < 30; y++ {
			for x := 0; x < 40; x++ {
				ref.Set(x, y, dec.At(x, y))
			}
		}
		if !slices.Equal(px, cropCHW(ref, 30)) {
			t.Fatalf("record %d (JPEG) differs from image/jpeg's decoding", i)
		}
		sum := 0
		for k := range px {
			d := int(px[k]) - int(want[k])
			sum += max(d, -d)
		}
		if mean := float64(sum) / float64(len(px)); mean > 12 {
			t.Fatalf("record %d (JPEG) mean abs error %.2f against the source", i, mean)
		}
	}
	// Downscaling a constant image keeps it constant; a lossy WebP reads too.
	flat := image.NewNRGBA(image.Rect(0, 0, 64, 48))
	for k := 0; k < len(flat.Pix); k += 4 {
		copy(flat.Pix[k:], []uint8{200, 100, 50, 255})
	}
	dir2 := filepath.Join(t.TempDir(), "flat")
	lmdbtest.Write(dir2, []lmdbtest.Pair{{Key: []byte("a"), Value: cwebp(t, encodePNG(t, flat), true)},
		{Key: []byte("b"), Value: cwebp(t, encodePNG(t, pattern(64, 48, 1)), false)}})
	ds2, err := Open(dir2, Options{Resolution: 16})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]float32, 3*16*16)
	ds2.Image(0, img)
	for k, want := range []float32{200, 100, 50} {
		for _, v := range img[k*256 : (k+1)*256] {
			if v != want/127.5-1 {
				t.Fatalf("resized constant plane %d has %v, want %v", k, v, want/127.5-1)
			}
		}
	}
	if err := ds2.Image(1, img); err != nil {
		t.Fatal(err)
	}
	// The default resolution is the paper's 256.
	if ds3, err := Open(dir2, Options{}); err != nil || ds3.(*set).h != 256 {
		t.Fatalf("default resolution: %v", err)
	}
}

func TestLSUNSkipBadCountsAndNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	writeLSUN(t, dir, lmdbtest.Pair{Key: []byte("zz-empty"), Value: nil}, lmdbtest.Pair{Key: []byte("zz-junk"), Value: []byte("RIFF....WEBPjunk")})
	_, err := Open(dir, Options{Resolution: 30})
	if !errors.Is(err, ErrDecode) || !bytes.Contains([]byte(err.Error()), []byte(`key "zz-empty": 0-byte value`)) {
		t.Fatalf("without SkipBad: %v", err)
	}
	ds, err := Open(dir, Options{Resolution: 30, SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	info := Describe(ds)
	if ds.Len() != 6 || !slices.Equal(info.Skipped, []string{`key "zz-empty"`, `key "zz-junk"`}) {
		t.Fatalf("Len %d Skipped %q", ds.Len(), info.Skipped)
	}
	clean := filepath.Join(t.TempDir(), "clean")
	writeLSUN(t, clean)
	ref, _ := Open(clean, Options{Resolution: 30})
	if ref.Fingerprint() != ds.Fingerprint() {
		t.Fatal("skipping bad values changed the good ones' fingerprint")
	}
}

func TestImageFolderSortedRecursiveAndSizes(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o755)
	names := []string{"b/c/z.png", "a.png", "b/a.png", "B.PNG"} // sorted: B.PNG, a.png, b/a.png, b/c/z.png
	for i, n := range names {
		os.WriteFile(filepath.Join(dir, n), encodePNG(t, pattern(12, 12, i)), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an image"), 0o644)
	ds, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := ds.Shape(); ds.Len() != 4 || c != 3 || h != 12 || w != 12 {
		t.Fatalf("Len %d Shape %d %d %d", ds.Len(), c, h, w)
	}
	px := make([]uint8, 3*12*12)
	for i, src := range []int{3, 1, 2, 0} {
		ds.(Pixeler).Pixels(i, px)
		if !slices.Equal(px, cropCHW(pattern(12, 12, src), 12)) {
			t.Fatalf("record %d is not %s", i, names[src])
		}
	}
	os.WriteFile(filepath.Join(dir, "b", "odd.png"), encodePNG(t, pattern(10, 8, 9)), 0o644)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrShape) {
		t.Fatalf("mixed sizes: %v", err)
	}
	if ds, err := Open(dir, Options{Resolution: 8}); err != nil || ds.Len() != 5 {
		t.Fatalf("resolution 8: %v", err)
	}
}

func TestPreparedRoundTrip(t *testing.T) {
	cifar := t.TempDir()
	writeCIFAR(t, cifar, 5)
	lsun := filepath.Join(t.TempDir(), "db")
	writeLSUN(t, lsun)
	for _, c := range []struct {
		spec string
		opts Options
	}{{cifar, Options{}}, {lsun, Options{Resolution: 24}}, {"mnist:test", Options{}}} {
		src, err := Open(c.spec, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		ch, h, w := src.Shape()
		out := filepath.Join(t.TempDir(), "prepared")
		per := 7 // several shards and a short last one
		if src.Len() > 1000 {
			per = 3000
		}
		idx, err := Prepare(src, out, per*ch*h*w)
		if err != nil {
			t.Fatal(err)
		}
		if idx.Count != src.Len() || len(idx.Shards) != (src.Len()+per-1)/per {
			t.Fatalf("%s: index count %d shards %d", c.spec, idx.Count, len(idx.Shards))
		}
		ds, err := Open(out, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Fingerprint() != src.Fingerprint() || ds.Len() != src.Len() || ds.Name() != src.Name() {
			t.Fatalf("%s: prepared %q/%d/%s vs source %q/%d/%s", c.spec, ds.Fingerprint(), ds.Len(), ds.Name(), src.Fingerprint(), src.Len(), src.Name())
		}
		if err := Verify(ds); err != nil {
			t.Fatal(err)
		}
		a, b := make([]float32, ch*h*w), make([]float32, ch*h*w)
		for i := 0; i < src.Len(); i += max(1, src.Len()/50) {
			src.Image(i, a)
			ds.Image(i, b)
			if !slices.Equal(a, b) || src.Label(i) != ds.Label(i) {
				t.Fatalf("%s: record %d differs after prepare", c.spec, i)
			}
		}
		if _, err := Prepare(src, out, 0); !errors.Is(err, ErrExists) {
			t.Fatalf("prepare over an existing dir: %v", err)
		}
		if _, err := Open(out, Options{Resolution: h * 2}); !errors.Is(err, ErrOption) {
			t.Fatalf("wrong resolution: %v", err)
		}
	}
}

func TestPreparedCorruptionIsDetected(t *testing.T) {
	src, _ := Open("mnist:test", Options{})
	out := filepath.Join(t.TempDir(), "p")
	if _, err := Prepare(src, out, 4000*1024); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(out, "shard-00001.bin")
	b, _ := os.ReadFile(shard)
	b[1000] ^= 1
	os.WriteFile(shard, b, 0o644)
	ds, err := Open(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(ds); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("flipped bit: %v", err)
	}
	// Training reads records without Verify: the damaged shard's records fail with
	// ErrIntegrity naming the shard, the intact shard's read normally.
	ds, err = Open(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := make([]float32, 32*32)
	if err := ds.Image(0, img); err != nil {
		t.Fatalf("record 0 (intact shard 0): %v", err)
	}
	per := 4000 * 1024 / (32 * 32)
	for _, i := range []int{per, per + 17} {
		if err := ds.Image(i, img); !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), shard) {
			t.Fatalf("record %d (damaged shard 1): %v, want ErrIntegrity naming %s", i, err, shard)
		}
	}
	os.WriteFile(shard, b[:len(b)-1], 0o644)
	if _, err := Open(out, Options{}); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("truncated shard: %v", err)
	}
}

// An index.json whose per_shard is smaller than its last shard's count (edited by hand, or
// copied from another prepare) is refused at Open; records beyond per_shard used to be looked
// up in a shard that does not exist (index out of range).
func TestPreparedLastShardLargerThanPerShard(t *testing.T) {
	cifar := t.TempDir()
	writeCIFAR(t, cifar, 4) // 20 train records
	src, err := Open(cifar, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "p")
	if _, err := Prepare(src, out, 0); err != nil { // one shard of 20
		t.Fatal(err)
	}
	ip := filepath.Join(out, indexName)
	raw, _ := os.ReadFile(ip)
	edited := strings.Replace(string(raw), `"per_shard": 87381`, `"per_shard": 10`, 1)
	if edited == string(raw) {
		t.Fatalf("index.json has no per_shard 87381:\n%s", raw)
	}
	os.WriteFile(ip, []byte(edited), 0o644)
	_, err = Open(out, Options{})
	want := fmt.Sprintf("malformed data: %s: 20 records, index.json's per_shard is 10", filepath.Join(out, "shard-00000.bin"))
	if !errors.Is(err, ErrFormat) || err.Error() != want {
		t.Fatalf("Open: %v\nwant %s", err, want)
	}
}

// A tar member of the split's name that declares more than maxCIFARFile bytes is refused by its
// header, before anything is inflated into memory (the old reader read it whole, up to the
// declared size).
func TestCIFARTarHugeMemberRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cifar-10-binary.tar.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "cifar-10-batches-bin/test_batch.bin", Size: 1 << 40, Mode: 0o644, Typeflag: tar.TypeReg})
	tw.Flush()
	zw.Close()
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(p, Options{Split: "test"})
	want := "malformed data: " + p + ": member cifar-10-batches-bin/test_batch.bin declares 1099511627776 bytes, more than 805568512 (262144 records; a CIFAR-10 batch file holds 10000); not a CIFAR-10 archive?"
	if !errors.Is(err, ErrFormat) || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}
