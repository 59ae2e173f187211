package dataset

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// pngClaiming returns a real PNG of a 4x4 grey image whose IHDR is rewritten (CRC fixed) to
// claim w x h pixels: a few dozen bytes on disk that announce a huge image.
func pngClaiming(t *testing.T, w, h uint32) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range img.Pix {
		img.Pix[i] = color.Gray{Y: uint8(17 * i)}.Y
	}
	b := encodePNG(t, img)
	// signature (8) | length (4) "IHDR" (4) | width (4) height (4) ... | CRC over type+data
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// TestImageBombRefusedBeforeDecoding: a folder image whose header claims 32768 x 32768 pixels
// (a 1 GiB greyscale buffer; the PNG format allows 2^31 x 2^31, which takes the process down)
// is refused as ErrDecode naming its size, before the decoder allocates the picture: the
// whole Open allocates less than 64 MiB. It used to allocate the 1 GiB the header announced.
func TestImageBombRefusedBeforeDecoding(t *testing.T) {
	dir := t.TempDir()
	bomb := pngClaiming(t, 1<<15, 1<<15)
	if err := os.WriteFile(filepath.Join(dir, "bomb.png"), bomb, 0o644); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Open(dir, Options{Resolution: 32})
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
		t.Errorf("Open of a %d-byte PNG allocated %d MiB", len(bomb), got>>20)
	}
	if !errors.Is(err, ErrDecode) || !strings.Contains(err.Error(), "32768x32768") || !strings.Contains(err.Error(), "bomb.png") {
		t.Fatalf("Open = %v, want ErrDecode naming bomb.png and its 32768x32768 pixels", err)
	}
	// SkipBad drops it like any undecodable image.
	good := encodePNG(t, pattern(8, 8, 1))
	os.WriteFile(filepath.Join(dir, "good.png"), good, 0o644)
	ds, err := Open(dir, Options{Resolution: 8, SkipBad: true})
	if err != nil || ds.Len() != 1 {
		t.Fatalf("SkipBad: %v", err)
	}
}

// TestNativeFolderScanBufferBounded: opening a folder of two 2048x2048 images at their native
// size (a few KiB each on disk) allocates what the images need, not a decode buffer for 256 of
// them: the eager scan's buffer is capped at 64 MiB. It used to take 256 x 12 MiB = 3 GiB
// (48 GiB for 8192x8192 images, the largest decodeImage accepts).
func TestNativeFolderScanBufferBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 2 {
		img := image.NewGray(image.Rect(0, 0, 2048, 2048))
		for j := range img.Pix {
			img.Pix[j] = uint8(i + j/4096)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.png", i)), encodePNG(t, img), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ds, err := Open(dir, Options{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if c, h, w := ds.Shape(); ds.Len() != 2 || c != 1 || h != 2048 || w != 2048 {
		t.Fatalf("Len %d Shape %d %d %d", ds.Len(), c, h, w)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 512<<20 {
		t.Errorf("Open of two 2048x2048 images allocated %d MiB", got>>20)
	}
}
