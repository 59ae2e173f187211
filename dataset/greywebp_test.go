package dataset

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "golang.org/x/image/webp"
)

// writeWebPLevels writes writeLevels' five 8x8 grey images into dir as WebP files made by cwebp
// from the greyscale PNGs (lossless with -exact, or lossy at quality 90), and returns dir.
func writeWebPLevels(t *testing.T, dir string, lossless bool) string {
	t.Helper()
	pngs := filepath.Join(t.TempDir(), "png")
	writeLevels(t, pngs, true)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, err := os.ReadFile(filepath.Join(pngs, fmt.Sprintf("%02d.png", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.webp", i)), cwebp(t, b, lossless), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// decodedRGB decodes the image file p as the folder reader did before grey WebP and JPEG
// folders opened as one channel: its R, G and B planes (8x8, no alpha).
func decodedRGB(t *testing.T, p string) []uint8 {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint8, 3*64)
	for k := 0; k < 64; k++ {
		c := color.RGBAModel.Convert(img.At(k%8, k/8)).(color.RGBA)
		out[k], out[64+k], out[128+k] = c.R, c.G, c.B
	}
	return out
}

// TestGreyWebPFolderIsOneChannel: WebP has no grey mode, so a grey image comes out of cwebp as
// lossy YCbCr with every chroma sample 128 or as lossless RGB with R = G = B; a folder of such
// files is greyscale like a folder of grey PNGs: 1 x H x W with Channels 0 or 1, and with
// Channels 3 (a 3-channel model's run) the 3 x H x W bytes and fingerprint it had when every
// WebP folder opened as RGB, so those runs resume. The lossless copy of writeLevels' images has
// the grey PNG folder's fingerprints exactly (027adcde... as 1 channel, ad007700... as 3: the
// release before grey folders printed that one for the WebP folder too). One colour WebP makes
// the folder 3-channel; ddpm dataset inspect prints the greyscale line. The old code opened
// every one of these folders as 3 x 8 x 8.
func TestGreyWebPFolderIsOneChannel(t *testing.T) {
	const (
		oneChannel = "027adcdeb1346f8292477ed289a502384c396f6ea436951b95875136f9db71f5"
		yesterday  = "ad00770087132438cf15eae503e76b55b2beb3878636fc46d5e59c5516639a4c"
	)
	root := t.TempDir()
	lossless := writeWebPLevels(t, filepath.Join(root, "lossless"), true)
	lossy := writeWebPLevels(t, filepath.Join(root, "lossy"), false)

	for _, tc := range []struct {
		dir    string
		fp1    string // "" : not pinned (lossy bytes are libwebp's)
		fp3    string
		lossed bool
	}{
		{lossless, oneChannel, yesterday, false},
		{lossy, "", "", true},
	} {
		for _, ch := range []int{0, 1} {
			ds, err := Open(tc.dir, Options{Channels: ch})
			if err != nil {
				t.Fatal(err)
			}
			if c, h, w := ds.Shape(); c != 1 || h != 8 || w != 8 || !Describe(ds).Grey {
				t.Fatalf("%s with Channels %d: shape %dx%dx%d grey %v, want 1x8x8 true", tc.dir, ch, c, h, w, Describe(ds).Grey)
			}
			if tc.fp1 != "" && ds.Fingerprint() != tc.fp1 {
				t.Fatalf("%s with Channels %d: fingerprint %s, want %s (the grey PNG folder's)", tc.dir, ch, ds.Fingerprint(), tc.fp1)
			}
			px := make([]uint8, 64)
			for i := 0; i < 5; i++ {
				if err := ds.(Pixeler).Pixels(i, px); err != nil {
					t.Fatal(err)
				}
				want := decodedRGB(t, filepath.Join(tc.dir, fmt.Sprintf("%02d.webp", i)))[:64]
				if !bytes.Equal(px, want) {
					t.Fatalf("%s with Channels %d: record %d = %v, want the decoded grey levels %v", tc.dir, ch, i, px, want)
				}
				if !tc.lossed && px[63] != greyLevel(i, 63) {
					t.Fatalf("%s: record %d pixel 63 = %d, want %d", tc.dir, i, px[63], greyLevel(i, 63))
				}
			}
		}

		// A 3-channel model reads what every release read before: the RGB planes as decoded.
		ds3, err := Open(tc.dir, Options{Channels: 3})
		if err != nil {
			t.Fatal(err)
		}
		if c, h, w := ds3.Shape(); c != 3 || h != 8 || w != 8 || !Describe(ds3).Grey {
			t.Fatalf("%s with Channels 3: shape %dx%dx%d grey %v, want 3x8x8 true", tc.dir, c, h, w, Describe(ds3).Grey)
		}
		if tc.fp3 != "" && ds3.Fingerprint() != tc.fp3 {
			t.Fatalf("%s with Channels 3: fingerprint %s, want %s (the release before's)", tc.dir, ds3.Fingerprint(), tc.fp3)
		}
		hash := newHash(3, 8, 8)
		px := make([]uint8, 3*64)
		for i := 0; i < 5; i++ {
			if err := ds3.(Pixeler).Pixels(i, px); err != nil {
				t.Fatal(err)
			}
			want := decodedRGB(t, filepath.Join(tc.dir, fmt.Sprintf("%02d.webp", i)))
			if !bytes.Equal(px, want) {
				t.Fatalf("%s with Channels 3: record %d differs from the decoded RGB planes", tc.dir, i)
			}
			if !bytes.Equal(want[:64], want[64:128]) || !bytes.Equal(want[:64], want[128:]) {
				t.Fatalf("%s: record %d decodes to unequal planes", tc.dir, i)
			}
			hash.add(-1, want)
		}
		if ds3.Fingerprint() != hash.hex() {
			t.Fatalf("%s with Channels 3: fingerprint %s, want %s (of the decoded RGB planes)", tc.dir, ds3.Fingerprint(), hash.hex())
		}
	}

	// Lossy with alpha (*image.NYCbCrA), some pixels fully transparent: still grey, one channel,
	// each pixel the grey level composited onto black.
	alphaDir := filepath.Join(root, "alpha")
	if err := os.MkdirAll(alphaDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ys, as := make([]uint8, 64), make([]uint8, 64)
	for k := range ys {
		ys[k], as[k] = greyLevel(2, k), uint8(max(0, 255-9*k))
	}
	if err := os.WriteFile(filepath.Join(alphaDir, "00.webp"), cwebp(t, pngGreyAlpha(t, 8, 8, ys, as), false), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := Open(alphaDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 1 || !Describe(ds).Grey {
		t.Fatalf("grey WebP with alpha: %d channels, grey %v; want 1, true", c, Describe(ds).Grey)
	}
	px := make([]uint8, 64)
	if err := ds.(Pixeler).Pixels(0, px); err != nil {
		t.Fatal(err)
	}
	if want := decodedRGB(t, filepath.Join(alphaDir, "00.webp"))[:64]; !bytes.Equal(px, want) || px[63] != 0 {
		t.Fatalf("grey WebP with alpha: %v, want %v (pixel 63 transparent: 0)", px, want)
	}

	// A colour WebP among grey ones: 3 channels, not greyscale.
	mixed := writeWebPLevels(t, filepath.Join(root, "mixed"), false)
	if err := os.WriteFile(filepath.Join(mixed, "05.webp"), cwebp(t, encodePNG(t, pattern(8, 8, 3)), false), 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err = Open(mixed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); c != 3 || Describe(ds).Grey {
		t.Fatalf("grey WebPs and a colour one: %d channels, grey %v; want 3, false", c, Describe(ds).Grey)
	}

	out, stderr, code := runDDPM(t, "dataset", "inspect", lossless)
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	for _, line := range []string{
		"shape        1x8x8 (CHW)\n",
		"greyscale    every image; a 1-channel model reads 1x8x8, a 3-channel model 3x8x8, the grey level in each channel (--channels 3: its fingerprint)\n",
		"fingerprint  sha256:" + oneChannel + "\n",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("inspect of the lossless WebP folder lacks %q:\n%s", line, out)
		}
	}
}
