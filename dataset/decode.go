package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/jpeg" // LSUN values and folder images
	_ "image/png"
	"os"
	"runtime"
	"sync"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // LSUN values as distributed
)

// maxImagePixels bounds the width x height an image's header may announce (64 Mi pixels,
// 8192 x 8192: far above the 256 x 256 of the largest preset, and above the photographs a folder
// may hold). The decoders allocate the whole picture from the header before reading its data,
// so without the bound a PNG of a few dozen bytes claiming 2^24 x 2^24 pixels makes the process
// die with "fatal error: out of memory" (not a recoverable panic).
const maxImagePixels = 1 << 26

// decodeImage decodes a PNG, JPEG or WebP image. It reads the header first and refuses an
// image of more than maxImagePixels pixels before anything is allocated for it. The error is
// the decoder's (or names the announced size), for the caller to wrap with the file or key.
func decodeImage(b []byte) (image.Image, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty")
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, fmt.Errorf("%s header announces %dx%d pixels; at most %d pixels (8192x8192) are accepted",
			format, cfg.Width, cfg.Height, maxImagePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	return img, err
}

// toCHW writes img as c x res x res uint8 planes into dst, c being 3 (RGB) or 1 (the red plane,
// which is the grey level of a greyscale image): the centred largest square is cut out and, when
// its side differs from res, resampled with Catmull-Rom (x/image/draw widens the kernel when
// shrinking, so a downscale is anti-aliased). res 0 keeps the image's own size (dst must then be
// c*H*W). Transparent pixels are composited onto black. Grey images become three equal planes
// when c is 3. rgba is scratch of the output size, reused across calls. It panics if c is not 1
// or 3 or len(dst) is not c*H*W.
func toCHW(img image.Image, res, c int, dst []uint8, rgba *image.RGBA) {
	if c != 1 && c != 3 {
		panic(fmt.Sprintf("dataset: toCHW: %d channels, want 1 or 3", c))
	}
	b := img.Bounds()
	var crop image.Rectangle
	if res == 0 {
		crop = b
	} else {
		side := min(b.Dx(), b.Dy())
		x0, y0 := b.Min.X+(b.Dx()-side)/2, b.Min.Y+(b.Dy()-side)/2
		crop = image.Rect(x0, y0, x0+side, y0+side)
	}
	out := rgba.Bounds()
	if crop.Dx() == out.Dx() && crop.Dy() == out.Dy() {
		draw.Draw(rgba, out, img, crop.Min, draw.Src) // exact: no resampling
	} else {
		xdraw.CatmullRom.Scale(rgba, out, img, crop, xdraw.Src, nil)
	}
	h, w := out.Dy(), out.Dx()
	plane := h * w
	if len(dst) != c*plane {
		panic(fmt.Sprintf("dataset: toCHW: len(dst) = %d, want %d", len(dst), c*plane))
	}
	for y := 0; y < h; y++ {
		row := rgba.Pix[y*rgba.Stride : y*rgba.Stride+4*w]
		for x := 0; x < w; x++ {
			o := y*w + x
			dst[o] = row[4*x]
			if c == 3 {
				dst[plane+o] = row[4*x+1]
				dst[2*plane+o] = row[4*x+2]
			}
		}
	}
}

// fileKind is what an image file's header says of its colours (greyHeader).
type fileKind int

const (
	kindUnread fileKind = iota // the header cannot be read or does not decode: no say
	kindGrey                   // stored as greyscale
	kindColour                 // stored in colour
	kindPixels                 // grey exactly when its pixels' chroma is neutral (neutralChroma)
)

// greyHeader says from the header of the image file at p whether it is stored as greyscale:
// kindGrey for a PNG of colour type 0 (grey) or 4 (grey with alpha), a paletted PNG whose palette
// is all grey, or a one-component (greyscale) JPEG; kindPixels for a WebP, which has no grey
// mode, a three-component JPEG and a PNG of colour type 2 (RGB) or 6 (RGB with alpha) (a grey
// image saved in colour mode, as ImageMagick's -type TrueColor, many editors and any encoder
// given RGB pixels with R = G = B write it), whose pixels decide (neutralChroma); kindColour for every other image (a CMYK JPEG among them); kindUnread when
// the file cannot be read or its header does not decode (reading it in full then fails with its
// own error).
func greyHeader(p string) fileKind {
	f, err := os.Open(p)
	if err != nil {
		return kindUnread
	}
	defer f.Close()
	br := bufio.NewReader(f)
	// PNG: signature (8) | length (4) "IHDR" (4) | width (4) height (4) depth (1) colour type (1).
	pngType := -1
	if hd, err := br.Peek(26); err == nil && string(hd[:8]) == "\x89PNG\r\n\x1a\n" && string(hd[12:16]) == "IHDR" {
		pngType = int(hd[25])
	}
	pngGrey := pngType == 0 || pngType == 4
	cfg, format, err := image.DecodeConfig(br)
	if err != nil {
		return kindUnread
	}
	if format == "webp" || (format == "jpeg" && (cfg.ColorModel == color.YCbCrModel || cfg.ColorModel == color.RGBAModel)) ||
		(format == "png" && (pngType == 2 || pngType == 6)) {
		return kindPixels
	}
	if m, isPal := cfg.ColorModel.(color.Palette); isPal {
		for _, e := range m {
			r, g, b, _ := e.RGBA()
			if r != g || g != b {
				return kindColour
			}
		}
		return kindGrey
	}
	if pngGrey || cfg.ColorModel == color.GrayModel || cfg.ColorModel == color.Gray16Model {
		return kindGrey
	}
	return kindColour
}

// neutralChroma reports whether a decoded WebP or JPEG image is grey. A lossy WebP (VP8) or a
// three-component JPEG (*image.YCbCr) is grey when every Cb and Cr sample the picture uses is
// exactly 128: cwebp stores a grey image so at every quality, and a JPEG encoder given R = G = B
// (libjpeg, Go's image/jpeg) computes chroma of exactly 128, which the DCT keeps exact (a
// constant block of zero after the level shift has no coefficients to quantize). Such samples
// decode to R = G = B = Y. A colour image whose chroma is off by one somewhere is not grey. A
// lossy WebP with alpha (*image.NYCbCrA) is grey when the chroma of every pixel that is not fully
// transparent is 128; a lossless WebP (VP8L, *image.NRGBA), an Adobe RGB JPEG (*image.RGBA) or
// an RGB or RGBA PNG (*image.RGBA, *image.NRGBA, and *image.RGBA64, *image.NRGBA64 at 16 bits a
// sample, where all 16 bits must agree) when every pixel that is not fully transparent has
// R = G = B. A fully transparent pixel is
// composited onto black whatever its colour. Such an image read as one channel (toCHW's red
// plane) loses nothing. Only the picture's rectangle counts, not the decoder's padding to whole
// macroblocks or MCUs.
func neutralChroma(img image.Image) bool {
	b := img.Bounds()
	switch m := img.(type) {
	case *image.NYCbCrA:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				if c := m.COffset(x, y); m.A[m.AOffset(x, y)] != 0 && (m.Cb[c] != 128 || m.Cr[c] != 128) {
					return false
				}
			}
		}
		return true
	case *image.YCbCr:
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				if c := m.COffset(x, y); m.Cb[c] != 128 || m.Cr[c] != 128 {
					return false
				}
			}
		}
		return true
	case *image.NRGBA:
		return equalRGB(m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), b.Dx(), b.Dy())
	case *image.RGBA:
		return equalRGB(m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), b.Dx(), b.Dy())
	case *image.NRGBA64:
		return equalRGB64(m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), b.Dx(), b.Dy())
	case *image.RGBA64:
		return equalRGB64(m.Pix, m.Stride, m.PixOffset(b.Min.X, b.Min.Y), b.Dx(), b.Dy())
	}
	return false
}

// equalRGB64 is equalRGB for 16-bit samples (big-endian, 8 bytes a pixel, as image.RGBA64 and
// image.NRGBA64 hold them): every pixel whose alpha is not 0 has R = G = B in all 16 bits.
func equalRGB64(pix []uint8, stride, off, w, h int) bool {
	for y := 0; y < h; y++ {
		row := pix[off+y*stride : off+y*stride+8*w]
		for k := 0; k < len(row); k += 8 {
			if (row[k+6] != 0 || row[k+7] != 0) &&
				(row[k] != row[k+2] || row[k+1] != row[k+3] || row[k+2] != row[k+4] || row[k+3] != row[k+5]) {
				return false
			}
		}
	}
	return true
}

// equalRGB reports whether every pixel of the w x h RGBA or NRGBA rectangle at pix[off:] (rows
// stride bytes apart) that is not fully transparent has R = G = B.
func equalRGB(pix []uint8, stride, off, w, h int) bool {
	for y := 0; y < h; y++ {
		row := pix[off+y*stride : off+y*stride+4*w]
		for k := 0; k < len(row); k += 4 {
			if row[k+3] != 0 && (row[k] != row[k+1] || row[k+1] != row[k+2]) {
				return false
			}
		}
	}
	return true
}

// scanResult is what an eager scan of a decoded source learns.
type scanResult struct {
	good        []int    // indices of the records that decoded, in order
	skipped     []string // names of those that did not (only with skipBad)
	fingerprint string   // canonical hash over the good records
	cache       []uint8  // all good records' pixels, when they fit in cacheLimit; else nil
}

// cacheLimit bounds the decoded pixels an eager scan keeps in memory (then training on a small
// raw folder or LMDB never decodes again); larger sources are decoded on every read, which is
// why `ddpm dataset prepare` exists.
const cacheLimit = 256 << 20

// scanBufLimit bounds the decode buffer of one round of an eager scan (TestNativeFolderScanBufferBounded).
const scanBufLimit = 64 << 20

// scanAll decodes records 0..n-1 (d bytes each) with GOMAXPROCS workers, in chunks hashed in
// order, so a raw source's fingerprint equals that of its prepared shards. A failing record
// fails the scan with its error unless skipBad and the error is ErrDecode, in which case it is
// dropped and named (a wrong size is never skipped: it is a mistake in the options, not data rot).
func scanAll(n, d, c, h, w int, skipBad bool, decode func(i int, dst []uint8) error, name func(i int) string) (scanResult, error) {
	var res scanResult
	keep := n*d <= cacheLimit
	hash := newHash(c, h, w)
	// Records decoded per round: 256, fewer when that would take over scanBufLimit (large
	// native-size images; the fingerprint hashes record by record, so the round size does not
	// change it).
	chunk := max(1, min(256, scanBufLimit/d))
	workers := runtime.GOMAXPROCS(0)
	buf := make([]uint8, chunk*d)
	errs := make([]error, chunk)
	for start := 0; start < n; start += chunk {
		m := min(chunk, n-start)
		var wg sync.WaitGroup
		next := make(chan int, m)
		for k := 0; k < m; k++ {
			next <- k
		}
		close(next)
		for range min(workers, m) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range next {
					errs[k] = decode(start+k, buf[k*d:(k+1)*d])
				}
			}()
		}
		wg.Wait()
		for k := 0; k < m; k++ {
			if errs[k] != nil {
				if !skipBad || !errors.Is(errs[k], ErrDecode) {
					return res, errs[k]
				}
				res.skipped = append(res.skipped, name(start+k))
				continue
			}
			res.good = append(res.good, start+k)
			hash.add(-1, buf[k*d:(k+1)*d])
			if keep {
				res.cache = append(res.cache, buf[k*d:(k+1)*d]...)
			}
		}
	}
	res.fingerprint = hash.hex()
	return res, nil
}
