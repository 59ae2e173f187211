//go:build linux

package checkpoint

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
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
// (DDPM_BENCH_DIR, default a temporary directory), adjacent and in alternating order (the
// store first in even rounds, plain first in odd ones), DDPM_BENCH_ROUNDS times
// (default 6) in one process and one store, saving steps 1, 2, ... and after each save marking
// it committed and pruning to the newest 3, as a trainer does.
//
// Reported: MB/s of each and the throughput ratios save/plain and get/plain (bar: >= 0.7),
// for the first round and as medians over the later ones ("steady"; this virtual disk's speed
// drifts between rounds, so each round's ratio comes from its own adjacent writes). A trainer
// saves many times in one process: from its second save on, the page buffers bbolt allocates
// at commit come from heap memory the process already holds, while a process's first save
// must have the kernel fault about 572 MB in (Save prefaults it with huge pages beside its
// sha256: 0.3-1.1 s on this virtual machine, against 2 s in 4 KiB faults inside bbolt's
// single-threaded commit). Cold reads evict the file's pages with posix_fadvise(DONTNEED)
// after the fsync.
// It needs about 2.5 GB of memory and 3 GB of disk, and runs only when
// DDPM_CHECKPOINT_BENCH=1 (make bench-checkpoint).
func BenchmarkCIFAR10State(b *testing.B) {
	if os.Getenv("DDPM_CHECKPOINT_BENCH") != "1" {
		b.Skip("set DDPM_CHECKPOINT_BENCH=1 (make bench-checkpoint): writes 1.2 GB")
	}
	dir := os.Getenv("DDPM_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	rounds := 6
	if v := os.Getenv("DDPM_BENCH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("DDPM_BENCH_ROUNDS=%q: want a positive integer", v)
		}
		rounds = n
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
	evict := func(path string) {
		if f, err := os.Open(path); err == nil {
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
	}

	// One entry per round (and per b.N iteration).
	var plainW, plainR, saveW, getR []time.Duration
	for i := 0; i < b.N; i++ {
		plainPath := filepath.Join(dir, "plain.bin")
		dbPath := filepath.Join(dir, "bench.db")
		os.Remove(plainPath)
		os.Remove(dbPath)
		plainRound := func() {
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
			plainW = append(plainW, time.Since(t0))
			f.Close()
			evict(plainPath)
			t0 = time.Now()
			// Into fresh memory, as Get returns fresh arenas.
			back, err := os.ReadFile(plainPath)
			if err != nil || len(back) != int(total) {
				b.Fatal(err)
			}
			plainR = append(plainR, time.Since(t0))
			back = nil
			os.Remove(plainPath)

		}
		storeRound := func(r int) {
			s, err := Open(dbPath, Options{})
			if err != nil {
				b.Fatal(err)
			}
			c.Step = int64(r + 1)
			t0 := time.Now()
			if _, err := s.Save(c); err != nil {
				b.Fatal(err)
			}
			saveW = append(saveW, time.Since(t0))
			// As a trainer does once the cluster commits: mark it, keep the newest 3 (the
			// default); from the fifth save on, Save reuses the pages pruning freed.
			if err := s.MarkCommitted(c.Step); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Prune(3, 0); err != nil {
				b.Fatal(err)
			}
			s.Close()
			evict(dbPath)
			s, err = Open(dbPath, Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			t0 = time.Now()
			got, err := s.Get(c.Step)
			if err != nil {
				b.Fatal(err)
			}
			getR = append(getR, time.Since(t0))
			if math.Float32bits(got.AdamV[cifar10Params-1]) != math.Float32bits(c.AdamV[cifar10Params-1]) {
				b.Fatal("read back different bytes")
			}
			got = nil
			s.Close()
		}
		// Each round's two writes are adjacent, and their order alternates: the write that
		// comes second can meet the host still flushing the first one's data. The store goes
		// first in the first round, so that the process's first Save finds no garbage of the
		// plain read's to reuse, as a trainer's first save finds none.
		for r := 0; r < rounds; r++ {
			if r%2 == 0 {
				storeRound(r)
				plainRound()
			} else {
				plainRound()
				storeRound(r)
			}
		}
		os.Remove(dbPath)
	}
	// The first round of each iteration, and the median over the later ones of each round's
	// own ratio (the disk's speed drifts between rounds; a round's two writes are adjacent).
	var firstRounds, laterRounds []int
	for k := range saveW {
		if k%rounds == 0 {
			firstRounds = append(firstRounds, k)
		} else {
			laterRounds = append(laterRounds, k)
		}
	}
	report := func(prefix string, ks []int) {
		if len(ks) == 0 {
			return
		}
		med := func(f func(k int) float64) float64 {
			v := make([]float64, len(ks))
			for i, k := range ks {
				v[i] = f(k)
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		b.ReportMetric(med(func(k int) float64 { return mbps(plainW[k]) }), prefix+"plain-write-MB/s")
		b.ReportMetric(med(func(k int) float64 { return mbps(saveW[k]) }), prefix+"save-MB/s")
		b.ReportMetric(med(func(k int) float64 { return mbps(plainR[k]) }), prefix+"plain-read-MB/s")
		b.ReportMetric(med(func(k int) float64 { return mbps(getR[k]) }), prefix+"get-MB/s")
		b.ReportMetric(med(func(k int) float64 { return plainW[k].Seconds() / saveW[k].Seconds() }), prefix+"save/plain")
		b.ReportMetric(med(func(k int) float64 { return plainR[k].Seconds() / getR[k].Seconds() }), prefix+"get/plain")
	}
	for k := range saveW {
		b.Logf("round %d: plain write %.2f s, save %.2f s (save/plain %.2f); plain read %.2f s, get %.2f s (get/plain %.2f)",
			k, plainW[k].Seconds(), saveW[k].Seconds(), plainW[k].Seconds()/saveW[k].Seconds(),
			plainR[k].Seconds(), getR[k].Seconds(), plainR[k].Seconds()/getR[k].Seconds())
	}
	report("first-", firstRounds)
	report("steady-", laterRounds)
	b.ReportMetric(0, "ns/op")
}
