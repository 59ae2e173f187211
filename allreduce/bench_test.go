package allreduce

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAllReduce times the ring in one process (2 and 4 ranks on loopback gRPC); the
// cross-process figures come from `ddpm bench allreduce` (make bench-allreduce).
func BenchmarkAllReduce(b *testing.B) {
	for _, world := range []int{2, 4} {
		for _, n := range []int{1 << 18, 1 << 22} {
			b.Run(fmt.Sprintf("world%d_%dMiB", world, n*4>>20), func(b *testing.B) {
				rings := buildRingsB(b, world, n)
				bufs := randomBufs(world, n, 1)
				b.SetBytes(int64(4 * n))
				b.ResetTimer()
				cpu0 := cpuTime()
				for range b.N {
					for r, err := range allReduce(rings, bufs) {
						if err != nil {
							b.Fatalf("rank %d: %v", r, err)
						}
					}
				}
				// CPU time (user+system, all ranks) is the figure that survives a shared machine.
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func buildRingsB(b *testing.B, world, n int) []*Ring {
	nodes := startNodesTB(b, world)
	peers := make([]string, world)
	for i, nd := range nodes {
		peers[i] = nd.addr
	}
	rings := make([]*Ring, world)
	for i, nd := range nodes {
		r, err := NewRing(nd.ep, Config{Generation: 1, Rank: i, Peers: peers, Timeout: time.Minute, DialOptions: nd.sec.DialOptions()})
		if err != nil {
			b.Fatal(err)
		}
		rings[i] = r
	}
	b.Cleanup(func() {
		for _, r := range rings {
			r.Close()
		}
	})
	return rings
}
