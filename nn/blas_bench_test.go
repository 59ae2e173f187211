package nn

import (
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// BenchmarkSgemmConv times the float32 GEMM of a cifar10 3x3 convolution at 32x32 for one sample
// (Cout 128, Cin*9 = 1152, P = 1024; 151M multiply-adds): compare OpenBLAS kernels with
// OPENBLAS_CORETYPE (Haswell: AVX2, SkylakeX: AVX-512). It calls the BLAS directly: gemm itself
// runs float32 on internal/sgemm where the CPU has AVX-512 (its BenchmarkSgemmConv times that).
func BenchmarkSgemmConv(b *testing.B) {
	const m, n, k = 128, 1024, 1152
	a, bb, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	for i := range a {
		a[i] = float32(i%7) * 0.1
	}
	for i := range bb {
		bb[i] = float32(i%5) * 0.1
	}
	b.ResetTimer()
	for range b.N {
		blas32.Implementation().Sgemm(blas.NoTrans, blas.NoTrans, m, n, k, 1, a, k, bb, n, 0, c, n)
	}
	b.ReportMetric(float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
}
