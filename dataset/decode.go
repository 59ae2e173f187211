package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/jpeg" // LSUN values and folder images
	_ "image/png"
	"runtime"
	"sync"

	xdraw "golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // LSUN values as distributed
)

// decodeImage decodes a PNG, JPEG or WebP image. The error is the decoder's, for the caller to
// wrap with the file or key.
func decodeImage(b []byte) (image.Image, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty")
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	return img, err
}

// toCHW writes img as 3 x res x res uint8 RGB planes into dst: the centred largest square is
// cut out and, when its side differs from res, resampled with Catmull-Rom (x/image/draw widens
// the kernel when shrinking, so a downscale is anti-aliased). res 0 keeps the image's own size
// (dst must then be 3*H*W). Transparent pixels are composited onto black. Grey images become
// three equal planes. rgba is scratch of the output size, reused across calls.
func toCHW(img image.Image, res int, dst []uint8, rgba *image.RGBA) {
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
	if len(dst) != 3*plane {
		panic(fmt.Sprintf("dataset: toCHW: len(dst) = %d, want %d", len(dst), 3*plane))
	}
	for y := 0; y < h; y++ {
		row := rgba.Pix[y*rgba.Stride : y*rgba.Stride+4*w]
		for x := 0; x < w; x++ {
			o := y*w + x
			dst[o] = row[4*x]
			dst[plane+o] = row[4*x+1]
			dst[2*plane+o] = row[4*x+2]
		}
	}
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

// scanAll decodes records 0..n-1 (d bytes each) with GOMAXPROCS workers, in chunks hashed in
// order, so a raw source's fingerprint equals that of its prepared shards. A failing record
// fails the scan with its error unless skipBad and the error is ErrDecode, in which case it is
// dropped and named (a wrong size is never skipped: it is a mistake in the options, not data rot).
func scanAll(n, d, c, h, w int, skipBad bool, decode func(i int, dst []uint8) error, name func(i int) string) (scanResult, error) {
	var res scanResult
	keep := n*d <= cacheLimit
	hash := newHash(c, h, w)
	const chunk = 256
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
