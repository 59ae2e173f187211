package nn

import (
	"runtime"
	"sync"
	"unsafe"

	"gonum.org/v1/gonum/blas"

	"ddpm/nn/internal/sgemm"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// Float is the element type of tensors: float32 for training, float64 for reference checks.
type Float interface {
	~float32 | ~float64
}

func trans(t bool) blas.Transpose {
	if t {
		return blas.Trans
	}
	return blas.NoTrans
}

// gemm computes c = alpha*op(a)*op(b) + beta*c for row-major matrices: op(a) is m x k, op(b) is
// k x n, c is m x n; lda, ldb, ldc are the row strides of a, b, c as stored.
func gemm[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	// Reinterpret the slices rather than box them in an interface (which would allocate).
	if unsafe.Sizeof(alpha) == 4 {
		if sgemm.Available {
			sgemm.Sgemm(tA, tB, m, n, k, float32(alpha), as[float32](a), lda, as[float32](b), ldb, float32(beta), as[float32](c), ldc)
			return
		}
		blas32.Implementation().Sgemm(trans(tA), trans(tB), m, n, k, float32(alpha), as[float32](a), lda,
			as[float32](b), ldb, float32(beta), as[float32](c), ldc)
		return
	}
	blas64.Implementation().Dgemm(trans(tA), trans(tB), m, n, k, float64(alpha), as[float64](a), lda,
		as[float64](b), ldb, float64(beta), as[float64](c), ldc)
}

// prepackA packs op(a) (m x k) for gemmPacked into buf (grown as needed) and returns it, or
// returns nil when the float32 kernel is not in use (float64, or a CPU without AVX-512); then
// gemmPacked multiplies a itself.
func prepackA[T Float](buf []T, tA bool, m, k int, a []T, lda int) []T {
	if unsafe.Sizeof(T(0)) != 4 || !sgemm.Available {
		return nil
	}
	buf = grow(buf, sgemm.PackedLen(m, k))
	sgemm.PackA(as[float32](buf), tA, m, k, as[float32](a), lda)
	return buf
}

// gemmPacked is gemm(tA, false, m, n, k, 1, a, lda, b, ldb, beta, c, ldc) on one goroutine,
// with op(a) taken from ap when prepackA packed it there (the same bits either way).
func gemmPacked[T Float](ap []T, tA bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if ap == nil || m == 0 || n == 0 {
		gemm(tA, false, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
		return
	}
	sgemm.SgemmPacked(as[float32](ap), false, m, n, k, as[float32](b), ldb, float32(beta), as[float32](c), ldc)
}

// as views s as a slice of E, which must have T's size (float32 or float64).
func as[E, T Float](s []T) []E {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*E)(unsafe.Pointer(unsafe.SliceData(s))), len(s))
}

// minParallelGemm is the multiply-add count below which pgemm runs on the calling goroutine.
const minParallelGemm = 1 << 20

// pgemm is gemm with the rows or the columns of c (whichever are more) split into one block per
// CPU, each block computed by a pool worker with a single-threaded BLAS call.
func pgemm[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || m*n*k < minParallelGemm {
		gemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	g := getGemmCall[T]()
	*g = gemmCall[T]{tA: tA, tB: tB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
		beta: beta, c: c, ldc: ldc, cols: n >= m, run: g.run}
	if g.cols {
		parallelFor(n, m*n*k, g.run)
	} else {
		parallelFor(m, m*n*k, g.run)
	}
	*g = gemmCall[T]{run: g.run} // drop the references to the operands
	putGemmCall(g)
}

// gemmCall holds one pgemm's arguments for its workers; run is its bound block method, made
// once per gemmCall, so a parallel GEMM allocates nothing once the pool is warm.
type gemmCall[T Float] struct {
	tA, tB        bool
	m, n, k       int
	alpha, beta   T
	a, b, c       []T
	lda, ldb, ldc int
	cols          bool // split the columns of c (else the rows)
	run           func(lo, hi int)
}

// block computes columns (or rows) [lo, hi) of c.
func (g *gemmCall[T]) block(lo, hi int) {
	if g.cols {
		bo := lo // column lo of op(b)
		if g.tB {
			bo = lo * g.ldb
		}
		gemm(g.tA, g.tB, g.m, hi-lo, g.k, g.alpha, g.a, g.lda, g.b[bo:], g.ldb, g.beta, g.c[lo:], g.ldc)
		return
	}
	ao := lo * g.lda // row lo of op(a)
	if g.tA {
		ao = lo
	}
	gemm(g.tA, g.tB, hi-lo, g.n, g.k, g.alpha, g.a[ao:], g.lda, g.b, g.ldb, g.beta, g.c[lo*g.ldc:], g.ldc)
}

var gemmCalls [2]sync.Pool // by element size: [0] float32, [1] float64

func getGemmCall[T Float]() *gemmCall[T] {
	pool := &gemmCalls[unsafe.Sizeof(T(0))/8]
	if g, ok := pool.Get().(*gemmCall[T]); ok {
		return g
	}
	g := new(gemmCall[T])
	g.run = g.block
	return g
}

func putGemmCall[T Float](g *gemmCall[T]) { gemmCalls[unsafe.Sizeof(T(0))/8].Put(g) }
