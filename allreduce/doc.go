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
// Use, per process: host one grpc.Server (with [ServerOptions]) and [Register] the ring service on
// it (on plain text, serve it on [Endpoint.DirectListener]); per generation of the cluster,
// [NewRing] with that generation's peers (this closes the previous generation's ring); call
// [Ring.AllReduce] once per training step, on every rank, with buffers of equal length.
//
// Transport: with TLS, the streams run on grpc-go (the process's grpc.Server, with
// [ServerOptions]). On plain text, a ring with Config.Direct and a server wrapped by
// [Endpoint.DirectListener] use direct connections (direct.go, h2.go): the same gRPC stream from
// the ring's own HTTP/2 code, in DATA frames of a whole sub-chunk written from the caller's buffer
// with one writev and read from the socket into a staging buffer that is summed or copied into the
// destination. The ring is CPU-bound on a small machine, and grpc-go's fixed 16 KiB frames, its
// copies into its write buffer and out of its read buffer and its hand-off between goroutines per
// frame cost about twice the CPU per byte of the same ring on bare TCP (bench/tcpring, with the
// kernel's autotuned socket buffers); a direct connection, with its fixed send buffer
// (ringSendBuffer, grpc-go's connections have it too), costs less than that (`ddpm bench allreduce
// --transport direct|grpc`). A rank process whose GOMAXPROCS exceeds its share of the cores spends
// more on handing work between threads: on 2 cores, GOMAXPROCS=1 per rank used 7-20% less CPU per
// byte than the default 2 (`ddpm bench allreduce --procs`).
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
