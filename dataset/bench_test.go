package dataset

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"ddpm/dataset/lmdb/lmdbtest"
	"ddpm/internal/testutil"
)

// Loader throughput: LoadBatch of a 128-sample global batch (positions from the sampler, flips
// on), as the trainer calls it. `make bench-data` runs these; compare images/s with the
// trainer's consumption (global batch / step time).
const benchBatch = 128

func benchLoad(b *testing.B, ds Dataset) {
	c, h, w := ds.Shape()
	dst := make([]float32, benchBatch*c*h*w)
	s := NewSampler(1, ds.Len())
	b.SetBytes(int64(benchBatch * c * h * w * 4))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lo := uint64(i) * benchBatch
		if err := LoadBatch(ds, s, 1, true, lo, lo+benchBatch, dst, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "images/s")
}

func BenchmarkLoadMNIST(b *testing.B) {
	ds, err := Open("mnist", Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchLoad(b, ds)
}

func BenchmarkLoadCIFARBinary(b *testing.B) {
	dir := b.TempDir()
	writeCIFAR(b, dir, 2000)
	ds, err := Open(dir, Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchLoad(b, ds)
}

// lsunLike writes n lossy WebP images of 341x256 (LSUN's shape: shorter side 256) into an LMDB.
func lsunLike(b *testing.B, n int) string {
	dir := filepath.Join(b.TempDir(), "lsun")
	var pairs []lmdbtest.Pair
	for i := 0; i < n; i++ {
		pairs = append(pairs, lmdbtest.Pair{Key: []byte(fmt.Sprintf("%040x", i)), Value: cwebp(b, encodePNG(b, pattern(341, 256, i)), false)})
	}
	if err := lmdbtest.Write(dir, pairs); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkLoadLSUNPrepared256 reads 3x256x256 prepared shards (what LSUN training should use).
func BenchmarkLoadLSUNPrepared256(b *testing.B) {
	src, err := Open(lsunLike(b, 32), Options{Resolution: 256})
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "prepared")
	if _, err := Prepare(src, out, 8<<20); err != nil {
		b.Fatal(err)
	}
	ds, err := Open(out, Options{})
	if err != nil {
		b.Fatal(err)
	}
	benchLoad(b, ds)
}

// BenchmarkLoadLSUNRawWebP256 decodes, crops and resizes the WebP value on every read (the
// in-memory cache disabled): why LSUN is prepared first.
func BenchmarkLoadLSUNRawWebP256(b *testing.B) {
	ds, err := Open(lsunLike(b, 32), Options{Resolution: 256})
	if err != nil {
		b.Fatal(err)
	}
	ds.(*set).r.(*lsunReader).cache = nil
	benchLoad(b, ds)
}

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveDDPM()
	os.Exit(code)
}
