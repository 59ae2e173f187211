package dataset

import (
	"errors"
	"fmt"
	"image"
	"io"
	"path/filepath"
	"strconv"
	"sync"

	"ddpm/dataset/lmdb"
)

// lsunDefaultResolution is the paper's LSUN resolution (Ho et al. 2020, section 4).
const lsunDefaultResolution = 256

// lsunReader reads LSUN as distributed: an LMDB whose keys are image ids and whose values are
// WebP (or, in older releases, JPEG) images with the shorter side 256.
type lsunReader struct {
	env   *lmdb.Env
	dir   string
	keys  [][]byte // of the kept records, in LMDB key order
	res   int
	cache []uint8 // decoded pixels of all records when small (scanAll), else nil
	d     int
	rgba  sync.Pool // *image.RGBA of res x res
}

// openLSUN opens an LSUN LMDB directory. It reads every value once, decoding, cropping and
// resizing it, to validate the data (bad values fail Open, or are skipped with SkipBad) and to
// compute the fingerprint; for the large LSUN categories that is minutes, which is why training
// should read shards made once by `ddpm dataset prepare`. An LMDB has no splits: a test split
// asked of it is ErrNoSplit.
func openLSUN(dir string, opts Options) (Dataset, error) {
	if err := checkNoSplit(dir, "an LSUN LMDB", opts); err != nil {
		return nil, err
	}
	res := opts.Resolution
	if res == 0 {
		res = lsunDefaultResolution
	}
	env, err := lmdb.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: not a readable LMDB environment: %v", ErrFormat, dir, err)
	}
	r := &lsunReader{env: env, dir: dir, res: res, d: 3 * res * res}
	fail := func(err error) (Dataset, error) { env.Close(); return nil, err }

	txn, err := env.Begin()
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %v", ErrFormat, dir, err))
	}
	defer txn.Abort()
	cur, err := txn.Cursor()
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %v", ErrFormat, dir, err))
	}
	var keys, vals [][]byte
	for {
		k, v, err := cur.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			cur.Close()
			return fail(fmt.Errorf("%w: %s: after %d records: %v", ErrFormat, dir, len(keys), err))
		}
		keys = append(keys, append([]byte(nil), k...))
		vals = append(vals, v) // valid until txn ends, after the scan
	}
	cur.Close()
	if len(keys) == 0 {
		return fail(fmt.Errorf("%w: %s: the LMDB holds no records", ErrEmpty, dir))
	}
	scan, err := scanAll(len(keys), r.d, 3, res, res, opts.SkipBad,
		func(i int, dst []uint8) error { return r.decode(keys[i], vals[i], dst) },
		func(i int) string { return "key " + strconv.Quote(string(keys[i])) })
	if err != nil {
		return fail(err)
	}
	if len(scan.good) == 0 {
		return fail(fmt.Errorf("%w: %s: none of the %d values decodes (first: %s)", ErrEmpty, dir, len(keys), scan.skipped[0]))
	}
	for _, i := range scan.good {
		r.keys = append(r.keys, keys[i])
	}
	r.cache = scan.cache
	s := &set{
		r: r, n: len(r.keys), c: 3, h: res, w: res,
		name: "lsun/" + filepath.Base(filepath.Clean(dir)), format: "lsun-lmdb", source: dir,
		skipped: scan.skipped, fp: scan.fingerprint,
	}
	return s, nil
}

func (r *lsunReader) decode(key, val []byte, dst []uint8) error {
	img, err := decodeImage(val)
	if err != nil {
		return fmt.Errorf("%w: %s: key %q: %d-byte value: %v", ErrDecode, r.dir, key, len(val), err)
	}
	rgba, _ := r.rgba.Get().(*image.RGBA)
	if rgba == nil {
		rgba = image.NewRGBA(image.Rect(0, 0, r.res, r.res))
	}
	toCHW(img, r.res, 3, dst, rgba)
	r.rgba.Put(rgba)
	return nil
}

func (r *lsunReader) pixels(i int, dst []uint8) error {
	if r.cache != nil {
		copy(dst, r.cache[i*r.d:(i+1)*r.d])
		return nil
	}
	txn, err := r.env.Begin()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrFormat, r.dir, err)
	}
	defer txn.Abort()
	v, err := txn.Get(r.keys[i])
	if err != nil {
		return fmt.Errorf("%w: %s: key %q: %v", ErrFormat, r.dir, r.keys[i], err)
	}
	return r.decode(r.keys[i], v, dst)
}
