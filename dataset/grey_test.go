package dataset

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// pngGreyAlpha encodes a w x h PNG of colour type 4 (grey with alpha, 8 bits), which Go's
// encoder never writes (it writes NRGBA as colour type 6): y and a hold the pixels row-major.
func pngGreyAlpha(t *testing.T, w, h int, y, a []uint8) []byte {
	t.Helper()
	var raw bytes.Buffer
	for r := 0; r < h; r++ {
		raw.WriteByte(0) // filter: none
		for x := 0; x < w; x++ {
			raw.WriteByte(y[r*w+x])
			raw.WriteByte(a[r*w+x])
		}
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw.Bytes())
	zw.Close()
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		body := append([]byte(typ), data...)
		b.Write(body)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(body))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 4 // depth 8, grey + alpha
	chunk("IHDR", ihdr)
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

// TestGreyFolderIsOneChannel: a folder whose images are all stored as greyscale (PNG grey 8 and
// 16 bits, grey with alpha, an all-grey palette, a one-component JPEG) opens as 1 x H x W, each
// record its grey levels exactly (the alpha composited onto black; the JPEG as Go decodes it),
// as a 1-channel model takes it; its prepared copy has the same shape and fingerprint. One RGB
// image among them makes the folder 3-channel, the grey records three equal planes. Grey
// folders used to open as 3 x H x W, which no 1-channel model accepted.
func TestGreyFolderIsOneChannel(t *testing.T) {
	const n = 6
	dir := filepath.Join(t.TempDir(), "grey")
	os.MkdirAll(dir, 0o755)
	lv := func(i, k int) uint8 { return uint8(i*37 + k*5) }
	alpha := func(k int) uint8 { return uint8(255 - 7*k) }
	want := make([][]uint8, 5)
	for i := range want {
		want[i] = make([]uint8, n*n)
	}

	g := image.NewGray(image.Rect(0, 0, n, n))
	for k := range g.Pix {
		g.Pix[k] = lv(0, k)
		want[0][k] = lv(0, k)
	}
	os.WriteFile(filepath.Join(dir, "a-grey.png"), encodePNG(t, g), 0o644)

	g16 := image.NewGray16(image.Rect(0, 0, n, n))
	for k := 0; k < n*n; k++ {
		g16.SetGray16(k%n, k/n, color.Gray16{Y: uint16(lv(1, k)) * 0x101})
		want[1][k] = lv(1, k)
	}
	os.WriteFile(filepath.Join(dir, "b-grey16.png"), encodePNG(t, g16), 0o644)

	ys, as := make([]uint8, n*n), make([]uint8, n*n)
	for k := range ys {
		ys[k], as[k] = lv(2, k), alpha(k)
		r, _, _, _ := color.NRGBA{ys[k], ys[k], ys[k], as[k]}.RGBA()
		want[2][k] = uint8(r >> 8)
	}
	os.WriteFile(filepath.Join(dir, "c-greyalpha.png"), pngGreyAlpha(t, n, n, ys, as), 0o644)

	var pal color.Palette
	for v := 0; v < 256; v += 17 {
		pal = append(pal, color.Gray{Y: uint8(v)})
	}
	p := image.NewPaletted(image.Rect(0, 0, n, n), pal)
	for k := range p.Pix {
		p.Pix[k] = uint8(k % len(pal))
		want[3][k] = uint8(17 * (k % len(pal)))
	}
	os.WriteFile(filepath.Join(dir, "d-palette.png"), encodePNG(t, p), 0o644)

	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, g, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "e-grey.jpg"), jb.Bytes(), 0o644)
	dec, err := jpeg.Decode(bytes.NewReader(jb.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	for k := range want[4] {
		want[4][k] = dec.(*image.Gray).GrayAt(k%n, k/n).Y // its stride may exceed n
	}

	ds, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := ds.Shape(); ds.Len() != 5 || c != 1 || h != n || w != n {
		t.Fatalf("grey folder: Len %d Shape %dx%dx%d, want 5 records of 1x%dx%d", ds.Len(), c, h, w, n, n)
	}
	px := make([]uint8, n*n)
	for i := range want {
		if err := ds.(Pixeler).Pixels(i, px); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(px, want[i]) {
			t.Errorf("record %d: %v\nwant %v", i, px, want[i])
		}
	}
	// At a resolution too (resampled), and through prepared shards with the same fingerprint.
	if ds8, err := Open(dir, Options{Resolution: 8}); err != nil {
		t.Fatal(err)
	} else if c, h, w := ds8.Shape(); c != 1 || h != 8 || w != 8 {
		t.Fatalf("resolution 8: Shape %dx%dx%d, want 1x8x8", c, h, w)
	}
	prep := filepath.Join(t.TempDir(), "prep")
	if _, err := Prepare(ds, prep, 0); err != nil {
		t.Fatal(err)
	}
	pds, err := Open(prep, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := pds.Shape(); c != 1 || pds.Fingerprint() != ds.Fingerprint() {
		t.Fatalf("prepared: %d channels, fingerprint %s, want 1 and %s", c, pds.Fingerprint(), ds.Fingerprint())
	}

	// One RGB image: three channels, the grey records as three equal planes.
	os.WriteFile(filepath.Join(dir, "f-rgb.png"), encodePNG(t, pattern(n, n, 1)), 0o644)
	ds, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _, _ := ds.Shape(); ds.Len() != 6 || c != 3 {
		t.Fatalf("grey and RGB: Len %d, %d channels, want 6 and 3", ds.Len(), c)
	}
	px3 := make([]uint8, 3*n*n)
	for i := range want {
		ds.(Pixeler).Pixels(i, px3)
		for c := 0; c < 3; c++ {
			if !slices.Equal(px3[c*n*n:(c+1)*n*n], want[i]) {
				t.Errorf("record %d plane %d differs from its grey levels", i, c)
			}
		}
	}
	ds.(Pixeler).Pixels(5, px3)
	if !slices.Equal(px3, cropCHW(pattern(n, n, 1), n)) {
		t.Error("the RGB record is not its RGB planes")
	}
}
