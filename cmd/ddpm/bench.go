package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"ddpm/allreduce"
	"ddpm/internal/tlsauth"
)

// benchCmd is the parent of the benchmarks; other packages' benchmarks add their own children.
var benchCmd = &cobra.Command{
	Use:   "bench",
	Short: "Measure a component against its anchor",
	Args:  cobra.NoArgs,
}

var benchAR struct {
	ranks, sizes string
	chunkBytes   int
	anchor       string
	jsonOut      string
	procs        int
	cpuProfile   string
	transport    string
	// worker mode (one rank, started by the parent)
	worker      bool
	rank, world int
}

var benchAllreduceCmd = &cobra.Command{
	Use:   "allreduce",
	Short: "Time the gRPC ring all-reduce, one process per rank on loopback",
	Long: `Starts each rank as a separate process of this binary on 127.0.0.1 and times
AllReduce of float32 buffers as the anchors do (../shared/anchors/allreduce): per iteration a
barrier, one all-reduce, then the maximum time over ranks; the median over iterations is
reported, after 2 warm-up runs. algbw = bytes/time, busbw = algbw * 2(N-1)/N (nccl-tests),
GB/s = 1e9 B/s. With --anchor (the anchors' latest.json) it prints gloo's figures beside ours.
The ranks talk plain-text gRPC (no TLS), as gloo's TCP transport does. Each rank process runs
with GOMAXPROCS = cores / ranks (at least 1) unless --procs says otherwise: the ranks share the
machine's cores as gloo's single-threaded workers do, and a rank with more Ps than its share
of the cores spends its CPU handing frames between threads. The CPU column is the user+system
time of all ranks during the timed all-reduce, per buffer byte.
Sizes take B, KiB, MiB, GiB (powers of two) or kB, MB, GB (powers of ten) suffixes.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		sizes, err := parseSizes(benchAR.sizes)
		if err != nil {
			return withExit(2, err)
		}
		if benchAR.worker {
			return benchWorker(sizes)
		}
		var ranks []int
		for _, f := range strings.Split(benchAR.ranks, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n > 64 {
				return withExit(2, fmt.Errorf("--ranks: %q is not a rank count in [2, 64] (one rank has no peer to reduce with)", f))
			}
			ranks = append(ranks, n)
		}
		if err := checkBenchFlags(); err != nil {
			return withExit(2, err)
		}
		var anchors []anchorRow
		if benchAR.anchor != "" {
			if anchors, err = readAnchors(benchAR.anchor); err != nil {
				var pe *fs.PathError
				if errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) {
					return withExit(2, fmt.Errorf("--anchor %s does not exist", benchAR.anchor))
				}
				return withExit(2, fmt.Errorf("--anchor %s: %w", benchAR.anchor, err))
			}
		}
		var rows []benchRow
		for _, n := range ranks {
			rs, err := runBenchRanks(n)
			if err != nil {
				return err
			}
			rows = append(rows, rs...)
		}
		printBench(cmd.OutOrStdout(), rows, anchors)
		if benchAR.jsonOut != "" {
			b, _ := json.MarshalIndent(rows, "", " ")
			if err := os.WriteFile(benchAR.jsonOut, append(b, '\n'), 0o644); err != nil {
				return err
			}
		}
		return nil
	},
}

func init() {
	f := benchAllreduceCmd.Flags()
	f.StringVar(&benchAR.ranks, "ranks", "2,4", "comma-separated world sizes")
	f.StringVar(&benchAR.sizes, "sizes", "1MiB,16MiB,64MiB,143MB", "comma-separated buffer sizes in bytes")
	f.IntVar(&benchAR.chunkBytes, "chunk-bytes", 0, "pipelining chunk in bytes (0: the ring's default)")
	f.StringVar(&benchAR.anchor, "anchor", "", "anchors' latest.json to compare with (gloo rows)")
	f.StringVar(&benchAR.jsonOut, "json", "", "also write the results here as JSON")
	f.IntVar(&benchAR.procs, "procs", 0, "GOMAXPROCS of each rank process (0: the cores shared out among the ranks, at least 1)")
	f.StringVar(&benchAR.cpuProfile, "cpuprofile", "", "write each rank's CPU profile of the timed runs to `DIR`/cpu-rankR-of-N.pprof")
	f.StringVar(&benchAR.transport, "transport", "direct", "the ring's connections: direct (the ring's own HTTP/2 frames, what trainers on plain text use) or grpc (grpc-go's transport, what trainers on TLS use)")
	f.BoolVar(&benchAR.worker, "worker", false, "internal: run one rank")
	f.IntVar(&benchAR.rank, "rank", 0, "internal: this worker's rank")
	f.IntVar(&benchAR.world, "world", 0, "internal: the world size")
	for _, h := range []string{"worker", "rank", "world"} {
		_ = f.MarkHidden(h)
	}
	benchCmd.AddCommand(benchAllreduceCmd)
	rootCmd.AddCommand(benchCmd)
}

// checkBenchFlags refuses, before any rank starts, the flags each rank or the end of the run
// would refuse: a --chunk-bytes the ring does not take (every worker said so, and the parent
// then "bench worker 0 of 2: exit status 1"), a negative --procs (run as the default), and a
// --cpuprofile folder or a --json file's folder that does not exist (the workers, or the end of
// a bench of minutes, failed on it).
func checkBenchFlags() error {
	if c := benchAR.chunkBytes; c != 0 && (c < 4 || c > allreduce.MaxChunkBytes || c%4 != 0) {
		return fmt.Errorf("--chunk-bytes %d: want a multiple of 4 in [4, %d] (or 0, the ring's default)", c, allreduce.MaxChunkBytes)
	}
	if t := benchAR.transport; t != "direct" && t != "grpc" {
		return fmt.Errorf("--transport %q: want direct or grpc", t)
	}
	if benchAR.procs < 0 {
		return fmt.Errorf("--procs %d: want 1 or more (or 0, the cores shared out among the ranks)", benchAR.procs)
	}
	if d := benchAR.cpuProfile; d != "" {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return fmt.Errorf("--cpuprofile %s: no such folder (give an existing folder for the profiles)", d)
		}
	}
	if j := benchAR.jsonOut; j != "" {
		if fi, err := os.Stat(filepath.Dir(j)); err != nil || !fi.IsDir() {
			return fmt.Errorf("--json %s: folder %s does not exist", j, filepath.Dir(j))
		}
	}
	return nil
}

func parseSizes(s string) ([]int, error) {
	units := []struct {
		suf string
		mul float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}, {"B", 1}}
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		mul, num := 1.0, f
		for _, u := range units {
			if strings.HasSuffix(f, u.suf) {
				mul, num = u.mul, strings.TrimSuffix(f, u.suf)
				break
			}
		}
		v, err := strconv.ParseFloat(num, 64)
		b := int(v * mul)
		if err != nil || v <= 0 || b < 4 || b > 4<<30 {
			return nil, fmt.Errorf("--sizes: %q is not a size between 4 B and 4 GiB (e.g. 16MiB, 143MB)", f)
		}
		out = append(out, b/4*4)
	}
	return out, nil
}

// itersFor matches the anchors' iteration counts.
func itersFor(bytes int) int {
	switch {
	case bytes <= 1<<20:
		return 50
	case bytes <= 16<<20:
		return 20
	case bytes <= 64<<20:
		return 10
	}
	return 5
}

type benchRow struct {
	Ranks   int     `json:"ranks"`
	Bytes   int     `json:"bytes"`
	Iters   int     `json:"iters"`
	MedianS float64 `json:"median_s"`
	MinS    float64 `json:"min_s"`
	AlgBW   float64 `json:"algbw_GBps"`
	BusBW   float64 `json:"busbw_GBps"`
	// Procs is each rank process's GOMAXPROCS.
	Procs int `json:"gomaxprocs"`
	// CPUS is the median over iterations of the CPU time (user and system) that all ranks
	// together spent during the timed all-reduce.
	CPUS float64 `json:"cpu_s"`
	OK   bool    `json:"ok"`
}

// runBenchRanks starts n worker processes, tells each the others' addresses, and collects the
// RESULT lines rank 0 prints.
func runBenchRanks(n int) ([]benchRow, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	type proc struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	procs := make([]proc, n)
	defer func() {
		for _, p := range procs {
			if p.cmd != nil && p.cmd.Process != nil && p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Kill()
				_ = p.cmd.Wait()
			}
		}
	}()
	gomaxprocs := benchAR.procs
	if gomaxprocs <= 0 {
		gomaxprocs = max(1, runtime.NumCPU()/n)
	}
	addrs := make([]string, n)
	for r := range n {
		c := exec.Command(exe, "bench", "allreduce", "--worker", "--rank", strconv.Itoa(r), "--world", strconv.Itoa(n),
			"--sizes", benchAR.sizes, "--chunk-bytes", strconv.Itoa(benchAR.chunkBytes),
			"--procs", strconv.Itoa(gomaxprocs), "--cpuprofile", benchAR.cpuProfile, "--transport", benchAR.transport)
		c.Stderr = os.Stderr
		in, err := c.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := c.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := c.Start(); err != nil {
			return nil, err
		}
		procs[r] = proc{cmd: c, stdin: in, out: bufio.NewScanner(out)}
		if !procs[r].out.Scan() || !strings.HasPrefix(procs[r].out.Text(), "ADDR ") {
			return nil, fmt.Errorf("bench worker %d did not report its address", r)
		}
		addrs[r] = strings.TrimPrefix(procs[r].out.Text(), "ADDR ")
	}
	for _, p := range procs {
		if _, err := fmt.Fprintln(p.stdin, strings.Join(addrs, ",")); err != nil {
			return nil, err
		}
		p.stdin.Close()
	}
	var rows []benchRow
	var wg sync.WaitGroup
	for r := 1; r < n; r++ {
		wg.Go(func() {
			for procs[r].out.Scan() {
			}
		})
	}
	for procs[0].out.Scan() {
		line := procs[0].out.Text()
		if j, ok := strings.CutPrefix(line, "RESULT "); ok {
			var row benchRow
			if err := json.Unmarshal([]byte(j), &row); err != nil {
				return nil, fmt.Errorf("bench worker 0: %q: %w", line, err)
			}
			rows = append(rows, row)
		}
	}
	wg.Wait()
	for r, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			return nil, fmt.Errorf("bench worker %d of %d: %w", r, n, err)
		}
	}
	return rows, nil
}

// benchWorker is one rank: serve the ring, learn the peers on stdin, time every size.
func benchWorker(sizes []int) error {
	rank, world := benchAR.rank, benchAR.world
	if benchAR.procs > 0 {
		runtime.GOMAXPROCS(benchAR.procs)
	}
	if benchAR.cpuProfile != "" {
		f, err := os.Create(filepath.Join(benchAR.cpuProfile, fmt.Sprintf("cpu-rank%d-of-%d.pprof", rank, world)))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The workers talk plain text on loopback, chosen explicitly: the benchmark measures the
	// ring protocol, not TLS (which `ddpm local` and real clusters add).
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		return err
	}
	srv := grpc.NewServer(append(sec.ServerOptions(), allreduce.ServerOptions()...)...)
	ep := allreduce.Register(srv)
	direct := benchAR.transport == "direct"
	if direct {
		go srv.Serve(ep.DirectListener(lis))
	} else {
		go srv.Serve(lis)
	}
	// Stop gracefully (after the ring's Close, deferred below, runs first): the last
	// acknowledgement this rank sent must leave the process before it exits.
	defer func() {
		done := make(chan struct{})
		go func() { srv.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
	}()
	fmt.Printf("ADDR %s\n", lis.Addr())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return fmt.Errorf("bench worker %d: reading peers: %w", rank, err)
	}
	peers := strings.Split(strings.TrimSpace(line), ",")
	if len(peers) != world {
		return fmt.Errorf("bench worker %d: %d peers for world %d", rank, len(peers), world)
	}
	ring, err := allreduce.NewRing(ep, allreduce.Config{Generation: 1, Rank: rank, Peers: peers,
		Timeout: 120 * time.Second, ChunkBytes: benchAR.chunkBytes, DialOptions: sec.DialOptions(), Direct: direct})
	if err != nil {
		return err
	}
	defer ring.Close()
	ctx := context.Background()
	barrier := make([]float32, 1)
	times := make([]float32, 2*world) // this operation's seconds per rank, then CPU seconds per rank
	for _, nbytes := range sizes {
		buf := make([]float32, nbytes/4)
		iters := itersFor(nbytes)
		var meds, cpus []float64
		for it := -2; it < iters; it++ {
			for i := range buf {
				buf[i] = float32(rank + 1)
			}
			if err := ring.AllReduce(ctx, barrier); err != nil {
				return err
			}
			c0 := cpuSeconds()
			t0 := time.Now()
			if err := ring.AllReduce(ctx, buf); err != nil {
				return err
			}
			dt := time.Since(t0).Seconds()
			clear(times)
			times[rank] = float32(dt)
			times[world+rank] = float32(cpuSeconds() - c0)
			if err := ring.AllReduce(ctx, times); err != nil {
				return err
			}
			if it >= 0 {
				meds = append(meds, float64(slices.Max(times[:world])))
				var c float64
				for _, x := range times[world:] {
					c += float64(x)
				}
				cpus = append(cpus, c)
			}
		}
		want := float32(world * (world + 1) / 2)
		ok := float32(1)
		for i := 0; i < len(buf); i += 4099 {
			if buf[i] != want {
				ok = 0
			}
		}
		if buf[len(buf)-1] != want {
			ok = 0
		}
		okv := []float32{ok}
		if err := ring.AllReduce(ctx, okv); err != nil {
			return err
		}
		if rank == 0 {
			med, cpu := median(meds), median(cpus)
			slices.Sort(meds)
			alg := float64(nbytes) / med / 1e9
			row := benchRow{Ranks: world, Bytes: nbytes, Iters: iters, MedianS: med, MinS: meds[0], AlgBW: alg,
				BusBW: alg * 2 * float64(world-1) / float64(world), Procs: runtime.GOMAXPROCS(0), CPUS: cpu, OK: okv[0] == float32(world)}
			b, _ := json.Marshal(row)
			fmt.Printf("RESULT %s\n", b)
		}
	}
	return nil
}

type anchorRow struct {
	Impl    string  `json:"impl"`
	NP      int     `json:"np"`
	Bytes   int     `json:"bytes"`
	MedianS float64 `json:"median_s"`
	BusBW   float64 `json:"busbw_GBps"`
}

func readAnchors(path string) ([]anchorRow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res struct {
		Gloo []anchorRow `json:"gloo"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, err
	}
	return res.Gloo, nil
}

// gloo finds the anchor row of the same world and (within 1%) the same size.
func gloo(anchors []anchorRow, r benchRow) *anchorRow {
	for i, a := range anchors {
		if a.NP == r.Ranks && math.Abs(float64(a.Bytes-r.Bytes)) <= 0.01*float64(r.Bytes) {
			return &anchors[i]
		}
	}
	return nil
}

func printBench(w io.Writer, rows []benchRow, anchors []anchorRow) {
	fmt.Fprintf(w, "ddpm ring all-reduce (gRPC streams, %s connections, over plain-text TCP on loopback, no TLS, as gloo), time = median over iters of max over ranks;\n", benchAR.transport)
	fmt.Fprintln(w, "CPU ns/B = user+system CPU of all ranks during the timed all-reduce, per buffer byte; procs = GOMAXPROCS of each rank")
	fmt.Fprintln(w)
	hdr := "| ranks | procs | bytes | MiB | iters | median s | min s | algbw GB/s | busbw GB/s | CPU ns/B | ok |"
	sep := "|---|---|---|---|---|---|---|---|---|---|---|"
	if anchors != nil {
		hdr += " gloo median s | gloo busbw GB/s | busbw ours/gloo |"
		sep += "---|---|---|"
	}
	fmt.Fprintln(w, hdr)
	fmt.Fprintln(w, sep)
	for _, r := range rows {
		line := fmt.Sprintf("| %d | %d | %d | %.1f | %d | %.4f | %.4f | %.3f | %.3f | %.2f | %v |", r.Ranks, r.Procs, r.Bytes,
			float64(r.Bytes)/(1<<20), r.Iters, r.MedianS, r.MinS, r.AlgBW, r.BusBW, r.CPUS/float64(r.Bytes)*1e9, r.OK)
		if anchors != nil {
			if g := gloo(anchors, r); g != nil {
				line += fmt.Sprintf(" %.4f | %.3f | %.2f |", g.MedianS, g.BusBW, r.BusBW/g.BusBW)
			} else {
				line += " - | - | - |"
			}
		}
		fmt.Fprintln(w, line)
	}
}
