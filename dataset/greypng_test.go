package dataset

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// writePNG encodes img with Go's PNG encoder into p and checks that the file has colour type
// ct (the IHDR byte: 2 RGB, 6 RGB with alpha) and depth bits a sample.
func writePNG(t *testing.T, p string, img image.Image, ct, depth byte) {
	t.Helper()
	b := encodePNG(t, img)
	if b[24] != depth || b[25] != ct {
		t.Fatalf("%s: PNG of depth %d colour type %d, want %d and %d", p, b[24], b[25], depth, ct)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// greyAlpha is image i of writeLevels as an 8x8 RGBA PNG image (NRGBA, colour type 6): pixel
// k has R = G = B = greyLevel(i, k) and alpha 255 - 9k (0 from k = 29 on), except that the
// fully transparent pixels carry a colour (R 200, G 10, B 90), which compositing onto black
// drops. With tint > 0 pixel 3 (alpha 228) gets R raised by tint.
func greyAlpha(i, tint int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, 8, 8))
	for k := 0; k < 64; k++ {
		v, a := greyLevel(i, k), uint8(max(0, 255-9*k))
		c := color.NRGBA{v, v, v, a}
		if a == 0 {
			c = color.NRGBA{200, 10, 90, 0}
		}
		if k == 3 {
			c.R = uint8(min(255, int(v)+tint))
		}
		img.SetNRGBA(k%8, k/8, c)
	}
	return img
}

// grey16 is image i of writeLevels at 16 bits a sample (RGBA64, colour type 2 depth 16): each
// level v stored as v*257 in R, G and B, except that low is added to the low byte of R's.
func grey16(i int, low uint16) *image.RGBA64 {
	img := image.NewRGBA64(image.Rect(0, 0, 8, 8))
	for k := 0; k < 64; k++ {
		v := uint16(greyLevel(i, k)) * 257
		img.SetRGBA64(k%8, k/8, color.RGBA64{v&0xff00 | (v+low)&0xff, v, v, 0xffff})
	}
	return img
}

// TestGreyRGBPNGFolderIsOneChannel: a grey image saved as an RGB or RGBA PNG (colour type 2 or
// 6, what many tools write for a grey image in colour mode) is greyscale when R = G = B at every
// pixel that is not fully transparent, as for a lossless WebP: a folder of such files opens as
// 1 x H x W with Channels 0 (ddpm dataset inspect prints 1x8x8 and the greyscale line), each
// record the red plane as the folder reader decodes it (alpha composited onto black), and with
// Channels 3 as 3 x H x W, byte for byte the RGB planes and fingerprint the old code read, so
// the runs of 3-channel models on such folders resume. That holds for 16-bit samples when all
// 16 bits agree. A half-transparent tinted pixel, R and G differing only in their low byte at 16
// bits, or a faint tint in the last of more files than the workers that judge the first ones,
// make the folder colour (3 channels, the RGB planes). The old code opened every one of these
// folders as 3 x 8 x 8.
func TestGreyRGBPNGFolderIsOneChannel(t *testing.T) {
	root := t.TempDir()
	alpha, deep := filepath.Join(root, "alpha"), filepath.Join(root, "deep")
	for i := 0; i < 5; i++ {
		writePNG(t, filepath.Join(alpha, fmt.Sprintf("%02d.png", i)), greyAlpha(i, 0), 6, 8)
		writePNG(t, filepath.Join(deep, fmt.Sprintf("%02d.png", i)), grey16(i, 0), 2, 16)
	}
	for _, dir := range []string{alpha, deep} {
		var want [][]uint8 // the RGB planes the old code read
		old := newHash(3, 8, 8)
		for i := 0; i < 5; i++ {
			px := decodedRGB(t, filepath.Join(dir, fmt.Sprintf("%02d.png", i)))
			want = append(want, px)
			old.add(-1, px)
		}
		ds, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if c, h, w := ds.Shape(); c != 1 || h != 8 || w != 8 || !Describe(ds).Grey {
			t.Fatalf("%s: shape %dx%dx%d grey %v, want 1x8x8 true", dir, c, h, w, Describe(ds).Grey)
		}
		px := make([]uint8, 64)
		for i := 0; i < 5; i++ {
			if err := ds.(Pixeler).Pixels(i, px); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(px, want[i][:64]) {
				t.Fatalf("%s: record %d = %v, want the decoded red plane %v", dir, i, px, want[i][:64])
			}
		}
		if dir == deep && px[63] != greyLevel(4, 63) {
			t.Fatalf("16-bit folder: record 4 pixel 63 = %d, want %d", px[63], greyLevel(4, 63))
		}
		if dir == alpha && px[63] != 0 {
			t.Fatalf("RGBA folder: record 4 pixel 63 (transparent, coloured) = %d, want 0", px[63])
		}
		ds3, err := Open(dir, Options{Channels: 3})
		if err != nil {
			t.Fatal(err)
		}
		if c, _, _ := ds3.Shape(); c != 3 || !Describe(ds3).Grey || ds3.Fingerprint() != old.hex() {
			t.Fatalf("%s with Channels 3: %d channels grey %v fingerprint %s, want 3 true %s (the old code's)",
				dir, c, Describe(ds3).Grey, ds3.Fingerprint(), old.hex())
		}
		px3 := make([]uint8, 3*64)
		for i := 0; i < 5; i++ {
			if err := ds3.(Pixeler).Pixels(i, px3); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(px3, want[i]) {
				t.Fatalf("%s with Channels 3: record %d differs from the RGB planes the old code read", dir, i)
			}
		}
	}

	out, stderr, code := runDDPM(t, "dataset", "inspect", alpha)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		"shape        1x8x8 (CHW)\n",
		"greyscale    every image; a 1-channel model reads 1x8x8, a 3-channel model 3x8x8, the grey level in each channel (--channels 3: its fingerprint)\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("inspect of the RGBA PNG folder lacks %q:\n%s", line, out)
		}
	}

	// Colour: a tinted half-transparent pixel; R's low byte off by one at 16 bits; a tint in
	// the last file, after more grey RGB PNGs than GOMAXPROCS (found by the one-channel scan).
	tinted := filepath.Join(root, "tinted")
	n := runtime.GOMAXPROCS(0) + 3
	for i := 0; i < n; i++ {
		writePNG(t, filepath.Join(tinted, fmt.Sprintf("%03d.png", i)), rgbLevels(i%5, 8, 8, 0), 2, 8)
	}
	writePNG(t, filepath.Join(tinted, fmt.Sprintf("%03d.png", n)), rgbLevels(2, 8, 8, 1), 2, 8)
	for _, tc := range []struct {
		name string
		img  image.Image
		ct   byte
		bits byte
	}{
		{"alpha-tint", greyAlpha(1, 2), 6, 8},
		{"deep-low", grey16(1, 1), 2, 16},
		{"tinted", nil, 0, 0},
	} {
		dir := filepath.Join(root, tc.name)
		if tc.img != nil {
			writeLevels(t, dir, false)
			writePNG(t, filepath.Join(dir, "05.png"), tc.img, tc.ct, tc.bits)
		}
		names, err := filepath.Glob(filepath.Join(dir, "*.png"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range []int{0, 3} {
			ds, err := Open(dir, Options{Channels: ch})
			if err != nil {
				t.Fatal(err)
			}
			if c, _, _ := ds.Shape(); c != 3 || Describe(ds).Grey || ds.Len() != len(names) {
				t.Fatalf("%s with Channels %d: %d channels grey %v %d records, want 3 false %d", tc.name, ch, c, Describe(ds).Grey, ds.Len(), len(names))
			}
			hash := newHash(3, 8, 8)
			px := make([]uint8, 3*64)
			for i, p := range names {
				if err := ds.(Pixeler).Pixels(i, px); err != nil {
					t.Fatal(err)
				}
				want := decodedRGB(t, p)
				if !bytes.Equal(px, want) {
					t.Fatalf("%s with Channels %d: record %d differs from the RGB planes", tc.name, ch, i)
				}
				hash.add(-1, want)
			}
			if ds.Fingerprint() != hash.hex() {
				t.Fatalf("%s with Channels %d: fingerprint %s, want %s", tc.name, ch, ds.Fingerprint(), hash.hex())
			}
		}
	}
}
