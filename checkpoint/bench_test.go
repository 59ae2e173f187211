//go:build linux

package checkpoint

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cifar10Params is the parameter count of the paper's CIFAR-10 U-Net (35.7 M; the cifar10
// preset's arena length).
const cifar10Params = 35_746_307

// BenchmarkCIFAR10State measures Save (write + fsync) and Get (cold read + verify) of the
// cifar10 preset's full state, 4 arenas of 35,746,307 float32 (572 MB), against a plain
// sequential write + fsync and a plain cold read of the same bytes in the same directory
// (DDPM_BENCH_DIR, default a temporary directory). Reported: MB/s of each and
// save/plain and get/plain throughput ratios (bar: save/plain >= 0.7). Cold reads evict the
// file's pages with posix_fadvise(DONTNEED) after the fsync. It needs about 2.5 GB of memory
// and runs only when DDPM_CHECKPOINT_BENCH=1 (make bench-checkpoint).
func BenchmarkCIFAR10State(b *testing.B) {
	if os.Getenv("DDPM_CHECKPOINT_BENCH") != "1" {
		b.Skip("set DDPM_CHECKPOINT_BENCH=1 (make bench-checkpoint): writes 1.2 GB")
	}
	dir := os.Getenv("DDPM_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	c := &Checkpoint{Step: 1, Preset: "cifar10", Tensors: []TensorInfo{{Name: "all", Shape: []int{cifar10Params}, Len: cifar10Params}}}
	for i, p := range []*[]float32{&c.Params, &c.EMA, &c.AdamM, &c.AdamV} {
		a := make([]float32, cifar10Params)
		for j := range a {
			a[j] = math.Float32frombits(uint32(j*2654435761+i) & 0x3fffffff)
		}
		*p = a
	}
	total := float64(4 * 4 * cifar10Params)
	mbps := func(d time.Duration) float64 { return total / 1e6 / d.Seconds() }

	var plainW, plainR, saveW, getR time.Duration
	for i := 0; i < b.N; i++ {
		plainPath := filepath.Join(dir, "plain.bin")
		dbPath := filepath.Join(dir, "bench.db")
		os.Remove(plainPath)
		os.Remove(dbPath)

		t0 := time.Now()
		f, err := os.Create(plainPath)
		if err != nil {
			b.Fatal(err)
		}
		for _, a := range c.arenas() {
			if _, err := f.Write(leBytes(a)); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		plainW += time.Since(t0)
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		t0 = time.Now()
		back, err := os.ReadFile(plainPath)
		if err != nil || len(back) != int(total) {
			b.Fatal(err)
		}
		plainR += time.Since(t0)
		back = nil
		os.Remove(plainPath)

		s, err := Open(dbPath, Options{})
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		if _, err := s.Save(c); err != nil {
			b.Fatal(err)
		}
		saveW += time.Since(t0)
		s.Close()
		if f, err := os.Open(dbPath); err == nil {
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
		s, err = Open(dbPath, Options{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		t0 = time.Now()
		got, err := s.Get(1)
		if err != nil {
			b.Fatal(err)
		}
		getR += time.Since(t0)
		if math.Float32bits(got.AdamV[cifar10Params-1]) != math.Float32bits(c.AdamV[cifar10Params-1]) {
			b.Fatal("read back different bytes")
		}
		got = nil
		s.Close()
		os.Remove(dbPath)
	}
	n := time.Duration(b.N)
	b.ReportMetric(mbps(plainW/n), "plain-write-MB/s")
	b.ReportMetric(mbps(saveW/n), "save-MB/s")
	b.ReportMetric(mbps(plainR/n), "plain-read-MB/s")
	b.ReportMetric(mbps(getR/n), "get-MB/s")
	b.ReportMetric(plainW.Seconds()/saveW.Seconds(), "save/plain")
	b.ReportMetric(plainR.Seconds()/getR.Seconds(), "get/plain")
	b.ReportMetric(0, "ns/op")
}
