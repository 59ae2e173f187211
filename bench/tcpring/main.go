// Command tcpring measures what a ring all-reduce costs in Go on plain loopback TCP, without
// gRPC: the floor under allreduce's gRPC ring on this machine, for telling the transport's
// cost from the kernel's and the Go runtime's. It is a diagnostic, not part of ddpm.
//
//	go run ./bench/tcpring --ranks 2,4 --bytes 143000000
//
// Each rank is a separate process (GOMAXPROCS = cores / ranks, at least 1, as `ddpm bench
// allreduce` runs its ranks). The ring is the same Baidu/Horovod schedule (allreduce.Plan):
// per step a rank writes its whole send segment from the buffer in one write while it reads
// the receive segment, 1 MiB at a time, into a scratch buffer and adds it (reduce-scatter) or
// reads it straight into the buffer (all-gather); steps are not pipelined. Per iteration: a
// token round as barrier, one all-reduce timed; the line per world gives the median over 5
// iterations (after 2 warm-ups) of the slowest rank, busbw = bytes/time * 2(N-1)/N, and the
// CPU (user+system) of all ranks per buffer byte.
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"gonum.org/v1/gonum/blas/gonum"

	"ddpm/allreduce"
)

const (
	iters   = 5
	warmups = 2
	// recvChunk is how many float32 values a reduce-scatter read adds at a time.
	recvChunk = 1 << 18
)

func main() {
	ranks := flag.String("ranks", "2,4", "comma-separated world sizes")
	nbytes := flag.Int("bytes", 143000000, "buffer size in bytes (a multiple of 4)")
	worker := flag.Bool("worker", false, "internal: run one rank")
	rank := flag.Int("rank", 0, "internal: this worker's rank")
	world := flag.Int("world", 0, "internal: the worker's world size")
	flag.Parse()
	if *nbytes < 4 || *nbytes%4 != 0 {
		fmt.Fprintf(os.Stderr, "tcpring: --bytes %d is not a positive multiple of 4\n", *nbytes)
		os.Exit(2)
	}
	if *worker {
		if err := runRank(*rank, *world, *nbytes/4); err != nil {
			fmt.Fprintf(os.Stderr, "tcpring rank %d: %v\n", *rank, err)
			os.Exit(1)
		}
		return
	}
	fmt.Println("| ranks | procs | bytes | median s | busbw GB/s | CPU ns/B |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, f := range strings.Split(*ranks, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 2 {
			fmt.Fprintf(os.Stderr, "tcpring: --ranks: %q is not a world size of at least 2\n", f)
			os.Exit(2)
		}
		if err := runWorld(n, *nbytes); err != nil {
			fmt.Fprintf(os.Stderr, "tcpring: world %d: %v\n", n, err)
			os.Exit(1)
		}
	}
}

// runWorld starts n rank processes, tells each the others' addresses and collects each rank's
// per-iteration seconds and CPU seconds.
func runWorld(n, nbytes int) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	procs := max(1, runtime.NumCPU()/n)
	cmds := make([]*exec.Cmd, n)
	outs := make([]*bufio.Scanner, n)
	ins := make([]io.WriteCloser, n)
	addrs := make([]string, n)
	defer func() {
		for _, c := range cmds {
			if c != nil && c.ProcessState == nil {
				_ = c.Process.Kill()
				_ = c.Wait()
			}
		}
	}()
	for r := range n {
		c := exec.Command(exe, "--worker", "--rank", strconv.Itoa(r), "--world", strconv.Itoa(n), "--bytes", strconv.Itoa(nbytes))
		c.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
		c.Stderr = os.Stderr
		if ins[r], err = c.StdinPipe(); err != nil {
			return err
		}
		out, err := c.StdoutPipe()
		if err != nil {
			return err
		}
		if err := c.Start(); err != nil {
			return err
		}
		cmds[r], outs[r] = c, bufio.NewScanner(out)
		if !outs[r].Scan() {
			return fmt.Errorf("rank %d did not report its address", r)
		}
		addrs[r] = strings.TrimPrefix(outs[r].Text(), "ADDR ")
	}
	for _, in := range ins {
		fmt.Fprintln(in, strings.Join(addrs, ","))
		in.Close()
	}
	secs := make([][]float64, iters) // [iteration][rank]
	cpus := make([]float64, iters)
	for r := range n {
		for it := range iters {
			if !outs[r].Scan() {
				return fmt.Errorf("rank %d stopped early", r)
			}
			var s, c float64
			if _, err := fmt.Sscanf(outs[r].Text(), "ITER %g %g", &s, &c); err != nil {
				return fmt.Errorf("rank %d: %q: %w", r, outs[r].Text(), err)
			}
			secs[it] = append(secs[it], s)
			cpus[it] += c
		}
		if !outs[r].Scan() || outs[r].Text() != "OK" {
			return fmt.Errorf("rank %d: wrong sum", r)
		}
	}
	for r, c := range cmds {
		if err := c.Wait(); err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
	}
	worst := make([]float64, iters)
	for it := range iters {
		worst[it] = slices.Max(secs[it])
	}
	slices.Sort(worst)
	slices.Sort(cpus)
	med := worst[iters/2]
	busbw := float64(nbytes) / med / 1e9 * 2 * float64(n-1) / float64(n)
	fmt.Printf("| %d | %d | %d | %.4f | %.3f | %.2f |\n", n, procs, nbytes, med, busbw, cpus[iters/2]/float64(nbytes)*1e9)
	return nil
}

func runRank(rank, world, n int) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("ADDR %s\n", lis.Addr())
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return err
	}
	peers := strings.Split(strings.TrimSpace(line), ",")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	var out net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; {
		if out, err = net.Dial("tcp", peers[(rank+1)%world]); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	in, ok := <-accepted
	if !ok {
		return fmt.Errorf("no connection from rank %d", (rank+world-1)%world)
	}
	buf := make([]float32, n)
	scratch := make([]float32, recvChunk)
	plan := allreduce.Plan(world, rank, n)
	blas := gonum.Implementation{}
	run := func() error {
		for _, st := range plan.Steps {
			send := plan.Segments[st.Send]
			recv := buf[plan.Segments[st.Recv].Off:][:plan.Segments[st.Recv].Len]
			sent := make(chan error, 1)
			go func() {
				_, err := out.Write(bytesOf(buf[send.Off:][:send.Len]))
				sent <- err
			}()
			if st.Phase == allreduce.ReduceScatter {
				for len(recv) > 0 {
					k := min(len(recv), recvChunk)
					if _, err := io.ReadFull(in, bytesOf(scratch[:k])); err != nil {
						return err
					}
					blas.Saxpy(k, 1, scratch[:k], 1, recv[:k], 1)
					recv = recv[k:]
				}
			} else if _, err := io.ReadFull(in, bytesOf(recv)); err != nil {
				return err
			}
			if err := <-sent; err != nil {
				return err
			}
		}
		return nil
	}
	var token [1]byte
	for it := -warmups; it < iters; it++ {
		for i := range buf {
			buf[i] = float32(rank + 1)
		}
		// Barrier: a token goes round the ring twice (every rank has refilled).
		for range 2 {
			if rank == 0 {
				if _, err := out.Write(token[:]); err != nil {
					return err
				}
			}
			if _, err := io.ReadFull(in, token[:]); err != nil {
				return err
			}
			if rank != 0 {
				if _, err := out.Write(token[:]); err != nil {
					return err
				}
			}
		}
		c0, t0 := cpuSeconds(), time.Now()
		if err := run(); err != nil {
			return err
		}
		if it >= 0 {
			fmt.Printf("ITER %g %g\n", time.Since(t0).Seconds(), cpuSeconds()-c0)
		}
	}
	want := float32(world * (world + 1) / 2)
	for i := 0; i < n; i += 4099 {
		if buf[i] != want {
			return fmt.Errorf("buf[%d] = %v, want %v", i, buf[i], want)
		}
	}
	fmt.Println("OK")
	return nil
}

func bytesOf(x []float32) []byte {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		panic("tcpring: needs a little-endian host")
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return math.NaN()
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
