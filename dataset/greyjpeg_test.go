package dataset

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// writeJPEG encodes img with Go's image/jpeg at quality q (three components, YCbCr 4:2:0, as
// for any image that is not image.Gray) into p.
func writeJPEG(t *testing.T, p string, img image.Image, q int) {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// rgbLevels is image i of writeLevels (greyLevel) as a w x h RGBA image with R = G = B, the
// first 64 pixels' levels repeating; tint is added to R (0: grey).
func rgbLevels(i, w, h, tint int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for k := 0; k < w*h; k++ {
		v := greyLevel(i, k%64)
		img.SetRGBA(k%w, k/w, color.RGBA{uint8(min(255, int(v)+tint)), v, v, 255})
	}
	return img
}

// TestGreyJPEGFolderIsOneChannel: a grey image saved as a colour JPEG (three components, what
// ImageMagick's -type TrueColor or any encoder given RGB pixels with R = G = B writes) has
// chroma of exactly 128 on every pixel, at every quality (libjpeg-turbo 2.1.5 at qualities 5,
// 50, 90 and 100, baseline and progressive, 4:4:4 and 4:2:0, gave the same), and decodes to
// R = G = B; a folder of such files is greyscale like a folder of grey PNGs: 1 x H x W with
// Channels 0 or 1, each record the decoded grey level, and with Channels 3 (a 3-channel model's
// run) the 3 x H x W bytes and fingerprint of the decoded RGB planes, which is what every
// release before read, so those runs resume. A folder of grey JPEGs and grey PNGs is grey too.
// A JPEG of a faint tint (R four levels above G = B) after grey ones is colour: 3 channels,
// the decoded RGB planes. A JPEG cut short has no say with SkipBad. ddpm dataset inspect prints
// the greyscale line. The old code opened every one of these folders as 3
// channels.
func TestGreyJPEGFolderIsOneChannel(t *testing.T) {
	root := t.TempDir()
	greyDir := filepath.Join(root, "grey")
	qualities := []int{100, 90, 75, 30, 5}
	for i, q := range qualities {
		writeJPEG(t, filepath.Join(greyDir, fmt.Sprintf("%02d.jpg", i)), rgbLevels(i, 8, 8, 0), q)
	}
	// Odd sizes leave chroma samples half outside the picture; read at resolution 8.
	oddDir := filepath.Join(root, "odd")
	for i, q := range qualities {
		writeJPEG(t, filepath.Join(oddDir, fmt.Sprintf("%02d.jpeg", i)), rgbLevels(i, 13, 11, 0), q)
	}

	for _, tc := range []struct {
		dir string
		res int
	}{{greyDir, 0}, {oddDir, 8}} {
		var want [][]uint8 // the RGB planes each file decodes to at 8 x 8 (Channels 3 before)
		for i := range qualities {
			p := filepath.Join(tc.dir, fmt.Sprintf("%02d.jpg", i))
			if tc.res != 0 {
				p = filepath.Join(tc.dir, fmt.Sprintf("%02d.jpeg", i))
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			img, err := decodeImage(b)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := img.(*image.YCbCr); !ok {
				t.Fatalf("%s decodes to %T, want *image.YCbCr (a three-component JPEG)", p, img)
			}
			px := make([]uint8, 3*64)
			toCHW(img, 8, 3, px, image.NewRGBA(image.Rect(0, 0, 8, 8)))
			if !bytes.Equal(px[:64], px[64:128]) || !bytes.Equal(px[:64], px[128:]) {
				t.Fatalf("%s decodes to unequal planes", p)
			}
			want = append(want, px)
		}
		for _, ch := range []int{0, 1} {
			ds, err := Open(tc.dir, Options{Channels: ch, Resolution: tc.res})
			if err != nil {
				t.Fatal(err)
			}
			if c, h, w := ds.Shape(); c != 1 || h != 8 || w != 8 || !Describe(ds).Grey {
				t.Fatalf("%s with Channels %d: shape %dx%dx%d grey %v, want 1x8x8 true", tc.dir, ch, c, h, w, Describe(ds).Grey)
			}
			px := make([]uint8, 64)
			hash := newHash(1, 8, 8)
			for i := range qualities {
				if err := ds.(Pixeler).Pixels(i, px); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(px, want[i][:64]) {
					t.Fatalf("%s with Channels %d: record %d = %v, want the decoded grey levels %v", tc.dir, ch, i, px, want[i][:64])
				}
				hash.add(-1, px)
			}
			if ds.Fingerprint() != hash.hex() {
				t.Fatalf("%s with Channels %d: fingerprint %s, want %s", tc.dir, ch, ds.Fingerprint(), hash.hex())
			}
		}
		ds3, err := Open(tc.dir, Options{Channels: 3, Resolution: tc.res})
		if err != nil {
			t.Fatal(err)
		}
		if c, h, w := ds3.Shape(); c != 3 || h != 8 || w != 8 || !Describe(ds3).Grey {
			t.Fatalf("%s with Channels 3: shape %dx%dx%d grey %v, want 3x8x8 true", tc.dir, c, h, w, Describe(ds3).Grey)
		}
		hash := newHash(3, 8, 8)
		px := make([]uint8, 3*64)
		for i := range qualities {
			if err := ds3.(Pixeler).Pixels(i, px); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(px, want[i]) {
				t.Fatalf("%s with Channels 3: record %d differs from the decoded RGB planes", tc.dir, i)
			}
			hash.add(-1, want[i])
		}
		if ds3.Fingerprint() != hash.hex() {
			t.Fatalf("%s with Channels 3: fingerprint %s, want %s (of the decoded RGB planes, as before)", tc.dir, ds3.Fingerprint(), hash.hex())
		}
	}

	// Grey JPEGs and grey PNGs together: grey.
	mixed := filepath.Join(root, "mixed")
	writeLevels(t, mixed, true)
	writeJPEG(t, filepath.Join(mixed, "05.jpg"), rgbLevels(0, 8, 8, 0), 90)
	ds, err := Open(mixed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 1 || !Describe(ds).Grey || ds.Len() != 6 {
		t.Fatalf("grey PNGs and a grey JPEG: %d channels, grey %v, %d records; want 1, true, 6", c, Describe(ds).Grey, ds.Len())
	}

	// A faint tint after more grey JPEGs than the workers that judge the first files at once
	// (GOMAXPROCS): its decoded planes differ, so the folder is colour, found by a one-channel
	// scan that stops there and scans again as three channels; with Channels 3 too.
	tinted := filepath.Join(root, "tinted")
	n := runtime.GOMAXPROCS(0) + 3
	for i := 0; i < n; i++ {
		writeJPEG(t, filepath.Join(tinted, fmt.Sprintf("%03d.jpg", i)), rgbLevels(i%5, 8, 8, 0), 90)
	}
	last := filepath.Join(tinted, fmt.Sprintf("%03d.jpg", n))
	writeJPEG(t, last, rgbLevels(2, 8, 8, 4), 90)
	if d := decodedRGB(t, last); bytes.Equal(d[:64], d[64:128]) {
		t.Fatal("the tinted JPEG decodes with R = G: not a colour image to test with")
	}
	for _, ch := range []int{0, 3} {
		ds, err := Open(tinted, Options{Channels: ch})
		if err != nil {
			t.Fatal(err)
		}
		if c, _, _ := ds.Shape(); c != 3 || Describe(ds).Grey || ds.Len() != n+1 {
			t.Fatalf("grey JPEGs and a faintly tinted one, Channels %d: %d channels, grey %v, %d records; want 3, false, %d", ch, c, Describe(ds).Grey, ds.Len(), n+1)
		}
		hash := newHash(3, 8, 8)
		px := make([]uint8, 3*64)
		for i := 0; i <= n; i++ {
			if err := ds.(Pixeler).Pixels(i, px); err != nil {
				t.Fatal(err)
			}
			want := decodedRGB(t, filepath.Join(tinted, fmt.Sprintf("%03d.jpg", i)))
			if !bytes.Equal(px, want) {
				t.Fatalf("tinted folder, Channels %d: record %d differs from the decoded RGB planes", ch, i)
			}
			hash.add(-1, want)
		}
		if ds.Fingerprint() != hash.hex() {
			t.Fatalf("tinted folder, Channels %d: fingerprint %s, want %s", ch, ds.Fingerprint(), hash.hex())
		}
	}

	// The tinted one first: found by the first files' judges, before any scan.
	first := filepath.Join(root, "tinted-first")
	writeJPEG(t, filepath.Join(first, "000.jpg"), rgbLevels(2, 8, 8, 4), 90)
	for i := 1; i < 5; i++ {
		writeJPEG(t, filepath.Join(first, fmt.Sprintf("%03d.jpg", i)), rgbLevels(i, 8, 8, 0), 90)
	}
	ds, err = Open(first, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 3 || Describe(ds).Grey {
		t.Fatalf("a faintly tinted JPEG and grey ones: %d channels, grey %v; want 3, false", c, Describe(ds).Grey)
	}

	// A JPEG cut short has no say with SkipBad: the folder is grey, the file skipped and named.
	cut := filepath.Join(root, "cut")
	for i := range qualities {
		writeJPEG(t, filepath.Join(cut, fmt.Sprintf("%02d.jpg", i)), rgbLevels(i, 8, 8, 0), 90)
	}
	b, err := os.ReadFile(filepath.Join(cut, "02.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cut, "02.jpg"), b[:len(b)-40], 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err = Open(cut, Options{SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 1 || !Describe(ds).Grey || ds.Len() != 4 || !slices.Equal(Describe(ds).Skipped, []string{filepath.Join(cut, "02.jpg")}) {
		t.Fatalf("grey JPEGs and a cut one, SkipBad: %d channels, grey %v, %d records, skipped %v; want 1, true, 4, [02.jpg]",
			c, Describe(ds).Grey, ds.Len(), Describe(ds).Skipped)
	}

	out, stderr, code := runDDPM(t, "dataset", "inspect", greyDir)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		"shape        1x8x8 (CHW)\n",
		"greyscale    every image; a 1-channel model reads 1x8x8, a 3-channel model 3x8x8, the grey level in each channel (--channels 3: its fingerprint)\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("inspect of the grey JPEG folder lacks %q:\n%s", line, out)
		}
	}
}
