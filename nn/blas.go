package nn

import (
	"fmt"
	"runtime"

	"gonum.org/v1/gonum/blas"
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
	switch a := any(a).(type) {
	case []float32:
		blas32.Implementation().Sgemm(trans(tA), trans(tB), m, n, k, float32(alpha), a, lda,
			any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		blas64.Implementation().Dgemm(trans(tA), trans(tB), m, n, k, float64(alpha), a, lda,
			any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	default:
		panic(fmt.Sprintf("nn: gemm: unsupported element type %T", a))
	}
}

// minParallelGemm is the multiply-add count below which pgemm runs on the calling goroutine.
const minParallelGemm = 1 << 20

// pgemm is gemm with the rows or the columns of c (whichever are more) split into one block per
// CPU, each block computed by its own goroutine with a single-threaded BLAS call.
func pgemm[T Float](tA, tB bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	p := runtime.GOMAXPROCS(0)
	if p <= 1 || m*n*k < minParallelGemm {
		gemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if n >= m {
		parallelFor(n, m*n*k, func(lo, hi int) {
			bo := lo // column lo of op(b)
			if tB {
				bo = lo * ldb
			}
			gemm(tA, tB, m, hi-lo, k, alpha, a, lda, b[bo:], ldb, beta, c[lo:], ldc)
		})
		return
	}
	parallelFor(m, m*n*k, func(lo, hi int) {
		ao := lo * lda // row lo of op(a)
		if tA {
			ao = lo
		}
		gemm(tA, tB, hi-lo, n, k, alpha, a[ao:], lda, b, ldb, beta, c[lo*ldc:], ldc)
	})
}
