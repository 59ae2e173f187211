package dataset

import (
	"errors"
	"fmt"
	"image"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// imageExts are the file kinds a folder dataset reads (case-insensitive).
var imageExts = []string{".png", ".jpg", ".jpeg", ".webp"}

// folderReader reads a folder of images (CelebA-HQ, users' own data).
type folderReader struct {
	paths []string
	c     int // 1 for an all-greyscale folder read as such (Options.Channels 0 or 1), else 3
	h, w  int
	res   int // 0: native size
	cache []uint8
	d     int
	rgba  sync.Pool
}

// openFolder opens every PNG/JPEG/WebP file under dir, recursively, in sorted path order. With
// Resolution R each image is center-cropped and resized to R x R; with 0 all images must have
// the first one's size, and it must be square (ErrNotSquare). Like openLSUN it decodes everything
// once at Open (a folder of colour JPEGs or WebPs: a few images twice). A folder has no splits: a
// test split asked of it is ErrNoSplit. When every file is stored as greyscale (greyHeader: PNG
// grey or grey+alpha, an all-grey palette, a one-component JPEG, a WebP, three-component JPEG,
// or RGB or RGBA PNG of neutral chroma) its images have the channels opts.Channels asks for: one (0 or 1), as a
// 1-channel model takes them, or three equal planes (3), as a 3-channel model took grey folders
// before they opened as one channel, with that fingerprint. Otherwise three (RGB, grey files as
// three equal planes).
func openFolder(dir string, opts Options) (Dataset, error) {
	if err := checkNoSplit(dir, "an image folder", opts); err != nil {
		return nil, err
	}
	var paths []string
	others := map[string]int{} // files of other kinds, by extension: named when no image is found
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if ext := strings.ToLower(filepath.Ext(p)); slices.Contains(imageExts, ext) {
			paths = append(paths, p)
		} else {
			others[ext]++
		}
		return nil
	})
	if perm := unreadable(dir, err); perm != nil {
		return nil, perm // the folder or one below it
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, dir, err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%w: %s: no %s files (searched recursively%s); not a CIFAR-10, LMDB or prepared folder either",
			ErrEmpty, dir, strings.Join(imageExts, "/"), otherFiles(others))
	}
	slices.Sort(paths)
	r := &folderReader{paths: paths, res: opts.Resolution}
	if r.res != 0 {
		r.h, r.w = r.res, r.res
	} else {
		// The first readable image fixes the size.
		var firstPath string
		for _, p := range paths {
			if img, err := r.load(p); err == nil {
				r.h, r.w, firstPath = img.Bounds().Dy(), img.Bounds().Dx(), p
				break
			} else if !opts.SkipBad {
				return nil, err
			}
		}
		if r.h == 0 {
			return nil, fmt.Errorf("%w: %s: none of the %d images decodes", ErrEmpty, dir, len(paths))
		}
		// The first image fixes the size the others must have, so the first that is not
		// square is this one.
		if r.h != r.w {
			return nil, fmt.Errorf("%w: %s is %dx%d; training needs square images: pass a resolution to center-crop and resize all (--resolution N of ddpm dataset inspect/prepare; to train, prepare the folder with it and train on the prepared folder)",
				ErrNotSquare, firstPath, r.w, r.h)
		}
	}
	// One channel when every image is greyscale. Headers decide most files; a WebP, a
	// three-component JPEG or an RGB(A) PNG is judged on its pixels as the scan decodes it (one decode per
	// file): speculatively as one channel, scanned again as three at its first colour image.
	kinds, colour := headerKinds(paths)
	allGrey := !colour
	pixels := slices.Contains(kinds, kindPixels)
	if allGrey && pixels && opts.Channels != 3 && !firstPixelsGrey(paths, kinds) {
		allGrey = false // a colour folder of JPEGs, WebPs or RGB PNGs: no scan to waste
	}
	var (
		scan    scanResult
		neutral atomic.Bool // every kindPixels image scanned has neutral chroma
	)
	for {
		r.c = 3
		if allGrey && opts.Channels != 3 {
			r.c = 1
		}
		r.d = r.c * r.h * r.w
		judge := allGrey && pixels
		neutral.Store(true)
		scan, err = scanAll(len(paths), r.d, r.c, r.h, r.w, opts.SkipBad,
			func(i int, dst []uint8) error {
				img, err := r.load(paths[i])
				if err != nil {
					return err
				}
				if judge && kinds[i] == kindPixels && !neutralChroma(img) {
					if r.c == 1 {
						return errNotGrey
					}
					neutral.Store(false)
				}
				return r.record(paths[i], img, dst)
			},
			func(i int) string { return paths[i] })
		if r.c == 1 && errors.Is(err, errNotGrey) {
			allGrey = false
			continue
		}
		break
	}
	if err != nil {
		return nil, err
	}
	allGrey = allGrey && neutral.Load()
	if len(scan.good) == 0 {
		return nil, fmt.Errorf("%w: %s: none of the %d images decodes (first: %s)", ErrEmpty, dir, len(paths), scan.skipped[0])
	}
	r.paths = nil
	for _, i := range scan.good {
		r.paths = append(r.paths, paths[i])
	}
	r.cache = scan.cache
	return &set{
		r: r, n: len(r.paths), c: r.c, h: r.h, w: r.w,
		name: "folder/" + filepath.Base(filepath.Clean(dir)), format: "image-folder", source: dir,
		skipped: scan.skipped, fp: scan.fingerprint, grey: allGrey,
	}, nil
}

// otherFiles words the counts of files by extension that a folder without images holds, the
// three most common first (ties by extension, none last), e.g. "; it holds 12 .bmp and 1 .txt
// files"; "" for none.
func otherFiles(byExt map[string]int) string {
	if len(byExt) == 0 {
		return ""
	}
	exts := make([]string, 0, len(byExt))
	total := 0
	for e, n := range byExt {
		exts = append(exts, e)
		total += n
	}
	slices.SortFunc(exts, func(a, b string) int {
		if byExt[a] != byExt[b] {
			return byExt[b] - byExt[a]
		}
		if (a == "") != (b == "") { // files without an extension after the others
			return strings.Compare(b, a)
		}
		return strings.Compare(a, b)
	})
	var parts []string
	shown := 0
	for _, e := range exts[:min(3, len(exts))] {
		name := e
		if e == "" {
			name = "without an extension"
		}
		parts = append(parts, fmt.Sprintf("%d %s", byExt[e], name))
		shown += byExt[e]
	}
	if shown < total {
		parts = append(parts, fmt.Sprintf("%d other", total-shown))
	}
	list := parts[0]
	if len(parts) > 1 {
		list = strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
	}
	files := "files"
	if total == 1 {
		files = "file"
	}
	return "; it holds " + list + " " + files
}

// errNotGrey ends a one-channel scan at an image whose chroma is not neutral.
var errNotGrey = errors.New("not a greyscale image")

// headerKinds reads the header of every file of paths (greyHeader) with GOMAXPROCS workers;
// colour is true when one says kindColour, and the search ends there (the kinds of the files
// after it are then not all read).
func headerKinds(paths []string) (kinds []fileKind, colour bool) {
	kinds = make([]fileKind, len(paths))
	var found atomic.Bool
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !found.Load() {
				i := int(next.Add(1)) - 1
				if i >= len(paths) {
					return
				}
				if kinds[i] = greyHeader(paths[i]); kinds[i] == kindColour {
					found.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return kinds, found.Load()
}

// firstPixelsGrey decodes the first GOMAXPROCS files of kind kindPixels at once and reports
// whether none has chroma that is not neutral (an undecodable one has no say): a folder of
// colour JPEGs, WebPs or RGB PNGs is known for one before a one-channel scan would start on it.
func firstPixelsGrey(paths []string, kinds []fileKind) bool {
	var first []string
	for i, k := range kinds {
		if k == kindPixels && len(first) < runtime.GOMAXPROCS(0) {
			first = append(first, paths[i])
		}
	}
	var colour atomic.Bool
	parallelFor(len(first), func(k int) {
		b, err := os.ReadFile(first[k])
		if err != nil {
			return
		}
		if img, err := decodeImage(b); err == nil && !neutralChroma(img) {
			colour.Store(true)
		}
	})
	return !colour.Load()
}

func (r *folderReader) load(p string) (image.Image, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDecode, p, unwrapPathError(err))
	}
	img, err := decodeImage(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrDecode, p, err)
	}
	return img, nil
}

func (r *folderReader) read(p string, dst []uint8) error {
	img, err := r.load(p)
	if err != nil {
		return err
	}
	return r.record(p, img, dst)
}

// record writes img, decoded from the file p, as the folder's record into dst.
func (r *folderReader) record(p string, img image.Image, dst []uint8) error {
	if r.res == 0 {
		if b := img.Bounds(); b.Dx() != r.w || b.Dy() != r.h {
			return fmt.Errorf("%w: %s is %dx%d, the folder's images are %dx%d; pass a resolution to center-crop and resize all (--resolution N of ddpm dataset inspect/prepare; to train, prepare the folder with it and train on the prepared folder)",
				ErrShape, p, b.Dx(), b.Dy(), r.w, r.h)
		}
	}
	rgba, _ := r.rgba.Get().(*image.RGBA)
	if rgba == nil {
		rgba = image.NewRGBA(image.Rect(0, 0, r.w, r.h))
	}
	toCHW(img, r.res, r.c, dst, rgba)
	r.rgba.Put(rgba)
	return nil
}

func (r *folderReader) pixels(i int, dst []uint8) error {
	if r.cache != nil {
		copy(dst, r.cache[i*r.d:(i+1)*r.d])
		return nil
	}
	return r.read(r.paths[i], dst)
}
