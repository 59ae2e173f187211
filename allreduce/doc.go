// Package allreduce is the trainers' gradient exchange: a bandwidth-optimal ring all-reduce
// (sum) of a float32 buffer over gRPC bidirectional streams between ring neighbours.
//
// The algorithm is the Baidu/Horovod ring (Patarasuk & Yuan 2009, "Bandwidth optimal all-reduce
// algorithms for clusters of workstations"): N-1 reduce-scatter steps then N-1 all-gather steps,
// each rank sending and receiving 2(N-1)/N of the buffer. [Plan] is the pure schedule; [Ring]
// moves the bytes. Segments are cut into sub-chunks (Config.ChunkBytes) that pipeline: a chunk
// received and summed at step s is sent on at step s+1 while later chunks are still arriving.
//
// Every segment is summed exactly once, by one chain of ranks in a fixed ring order, and the
// all-gather copies bytes, so every rank ends with a bitwise-identical buffer.
//
// Use, per process: host one grpc.Server (with [ServerOptions]) and [Register] the ring service
// on it; per generation of the cluster, [NewRing] with that generation's peers (this closes the
// previous generation's ring); call [Ring.AllReduce] once per training step, on every rank, with
// buffers of equal length.
//
// Cost: the ring is CPU-bound on a small machine. Per byte moved, about half the CPU is the
// kernel's loopback TCP; the rest is gRPC's 16 KiB HTTP/2 frames (a copy into the write
// buffer, a copy out of the read buffer, a hand-off between goroutines per frame) and the
// sum or copy into the destination. The same ring in Go on plain TCP (bench/tcpring, run by
// `make bench-allreduce` after this ring) shows the floor: at 4 ranks on 2 cores it spends about
// half the CPU per byte this ring does, the difference being gRPC's framing. A rank process whose GOMAXPROCS exceeds its share of the
// cores spends more on handing frames between threads: on 2 cores, GOMAXPROCS=1 per rank used
// 7-20% less CPU per byte than the default 2 (`ddpm bench allreduce --procs`).
//
// Failure: a peer that dies, stalls past Config.Timeout, disagrees on the length or sends a
// malformed or out-of-sequence message makes AllReduce fail on every rank, with the same
// sentinel wherever the cause is known: the rank that detects it sends an abort signal against
// the data direction, each rank forwards it, so it travels round the whole ring. A failure is
// tied to an operation: a peer that completed operation k and then closed or died breaks k+1,
// not k (so a rank may finish its last step and exit, or move to a new generation, without
// failing peers still completing that step). After a failure the Ring stays broken (every
// later call returns the same error); build the next generation's. AllReduce returns success
// only when every frame arrived, every frame it sent was acknowledged by the successor, and gRPC
// holds no reference to the buffer (payloads are sent from it in place): never a partial result.
package allreduce

import "errors"

// Errors returned by this package, wrapped with the rank, generation and operation.
var (
	// ErrPeerLost: a neighbour's stream broke, a peer gave up, or no result came within
	// Config.Timeout.
	ErrPeerLost = errors.New("allreduce: peer lost")
	// ErrMismatch: the ranks disagree on the buffer length, the world, or the operation
	// sequence, or a peer sent a malformed message.
	ErrMismatch = errors.New("allreduce: ranks disagree")
	// ErrStaleGeneration: this ring's generation was superseded (a newer ring was built on this
	// endpoint or on a peer).
	ErrStaleGeneration = errors.New("allreduce: stale generation")
	// ErrClosed: the ring was closed.
	ErrClosed = errors.New("allreduce: ring closed")
	// ErrInvalidConfig: NewRing was given an unusable Config.
	ErrInvalidConfig = errors.New("allreduce: invalid config")
)
