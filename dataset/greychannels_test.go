package dataset

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"testing"
)

// greyLevel is pixel k of image i of the folders of TestGreyFolderForThreeChannelModel.
func greyLevel(i, k int) uint8 { return uint8(i*51 + k*11) }

// writeLevels writes five 8x8 images of greyLevel into dir as 00.png..04.png, stored as
// greyscale (colour type 0) when grey, else as RGB with three equal components (colour type 2,
// a grey image saved in colour mode).
func writeLevels(t *testing.T, dir string, grey bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		var img image.Image
		if grey {
			g := image.NewGray(image.Rect(0, 0, 8, 8))
			for k := range g.Pix {
				g.Pix[k] = greyLevel(i, k)
			}
			img = g
		} else {
			c := image.NewRGBA(image.Rect(0, 0, 8, 8))
			for k := 0; k < 64; k++ {
				v := greyLevel(i, k)
				c.SetRGBA(k%8, k/8, color.RGBA{v, v, v, 255})
			}
			img = c
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), encodePNG(t, img), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// writeColour writes five 8x8 colour images (pattern) into dir as 00.png..04.png (RGB).
func writeColour(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), encodePNG(t, pattern(8, 8, i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGreyFolderForThreeChannelModel: a folder of greyscale PNGs opened for a 3-channel model
// (Options.Channels 3) is 3 x H x W, each record's three planes the grey levels, and its
// fingerprint is the one the same images stored as RGB have, and the one the release before
// grey folders opened as 1 channel printed: ddpm built at ddadeaa, `ddpm dataset inspect DIR`
// on the five 8x8 PNGs writeLevels writes (the same bytes: Go's PNG encoder of image.Gray).
// Runs that release started on a grey folder with a 3-channel model pinned that fingerprint
// and trained on those bytes. Channels 0 and 1 still open it as 1 x H x W (a 1-channel run),
// Info.Grey says the folder is greyscale either way. The same images stored as RGB PNGs with
// R = G = B (colour type 2) are greyscale too: 1 x 8 x 8 with the grey folder's 1-channel
// fingerprint, and with Channels 3 the fingerprint every release before pinned for that RGB
// folder (the old code opened it as 3 x 8 x 8 with Channels 1). A colour folder stays 3
// channels.
func TestGreyFolderForThreeChannelModel(t *testing.T) {
	const (
		yesterday  = "ad00770087132438cf15eae503e76b55b2beb3878636fc46d5e59c5516639a4c"
		oneChannel = "027adcdeb1346f8292477ed289a502384c396f6ea436951b95875136f9db71f5"
	)
	greyDir, rgbDir, colourDir := filepath.Join(t.TempDir(), "grey"), filepath.Join(t.TempDir(), "rgb"), filepath.Join(t.TempDir(), "colour")
	writeLevels(t, greyDir, true)
	writeLevels(t, rgbDir, false)
	writeColour(t, colourDir)

	for _, ch := range []int{0, 1} {
		rgb, err := Open(rgbDir, Options{Channels: ch})
		if err != nil {
			t.Fatal(err)
		}
		if c, h, w := rgb.Shape(); c != 1 || h != 8 || w != 8 || !Describe(rgb).Grey || rgb.Fingerprint() != oneChannel {
			t.Fatalf("RGB folder of R = G = B with Channels %d: shape %dx%dx%d grey %v fingerprint %s, want 1x8x8 true %s",
				ch, c, h, w, Describe(rgb).Grey, rgb.Fingerprint(), oneChannel)
		}
	}
	rgb, err := Open(rgbDir, Options{Channels: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := rgb.Shape(); c != 3 || h != 8 || w != 8 || !Describe(rgb).Grey {
		t.Fatalf("RGB folder of R = G = B with Channels 3: shape %dx%dx%d grey %v, want 3x8x8 true", c, h, w, Describe(rgb).Grey)
	}
	if rgb.Fingerprint() != yesterday {
		t.Fatalf("RGB folder of R = G = B with Channels 3: fingerprint %s, want %s (what its old 3-channel runs pinned)", rgb.Fingerprint(), yesterday)
	}
	colour, err := Open(colourDir, Options{Channels: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := colour.Shape(); c != 3 || h != 8 || w != 8 || Describe(colour).Grey {
		t.Fatalf("colour folder with Channels 1: shape %dx%dx%d grey %v, want 3x8x8 false", c, h, w, Describe(colour).Grey)
	}

	g3, err := Open(greyDir, Options{Channels: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := g3.Shape(); c != 3 || h != 8 || w != 8 {
		t.Fatalf("grey folder with Channels 3: shape %dx%dx%d, want 3x8x8", c, h, w)
	}
	if !Describe(g3).Grey {
		t.Fatal("grey folder with Channels 3: Info.Grey false")
	}
	if g3.Fingerprint() != yesterday {
		t.Fatalf("grey folder with Channels 3: fingerprint %s, want %s (yesterday's, and the RGB copy's)", g3.Fingerprint(), yesterday)
	}
	px := make([]uint8, 3*64)
	for i := 0; i < 5; i++ {
		if err := g3.(Pixeler).Pixels(i, px); err != nil {
			t.Fatal(err)
		}
		for ch := 0; ch < 3; ch++ {
			for k := 0; k < 64; k++ {
				if px[ch*64+k] != greyLevel(i, k) {
					t.Fatalf("record %d channel %d pixel %d = %d, want %d", i, ch, k, px[ch*64+k], greyLevel(i, k))
				}
			}
		}
	}

	for _, ch := range []int{0, 1} {
		g1, err := Open(greyDir, Options{Channels: ch})
		if err != nil {
			t.Fatal(err)
		}
		if c, h, w := g1.Shape(); c != 1 || h != 8 || w != 8 || !Describe(g1).Grey {
			t.Fatalf("grey folder with Channels %d: shape %dx%dx%d grey %v, want 1x8x8 true", ch, c, h, w, Describe(g1).Grey)
		}
		if g1.Fingerprint() == yesterday {
			t.Fatalf("grey folder with Channels %d has the 3-channel fingerprint", ch)
		}
		if err := g1.(Pixeler).Pixels(4, px[:64]); err != nil {
			t.Fatal(err)
		}
		if px[63] != greyLevel(4, 63) {
			t.Fatalf("grey folder with Channels %d: record 4 pixel 63 = %d, want %d", ch, px[63], greyLevel(4, 63))
		}
	}

	_, err = Open(greyDir, Options{Channels: 2})
	if !errors.Is(err, ErrOption) || err.Error() != "unsupported option: "+greyDir+": 2 channels (want 1 or 3)" {
		t.Fatalf("Channels 2: %v, want ErrOption naming the folder and the count", err)
	}
}
