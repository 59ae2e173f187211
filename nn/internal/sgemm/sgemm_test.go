package sgemm

import (
	"math"
	"testing"
)

// fill gives x deterministic values in [-1, 1).
func fill(x []float32, seed uint32) {
	s := seed*2654435761 + 1
	for i := range x {
		s ^= s << 13
		s ^= s >> 17
		s ^= s << 5
		x[i] = float32(s%2000)/1000 - 1
	}
}

// TestSgemmMatchesReference checks every transpose combination, strides wider than the
// matrices, alpha and beta, and sizes that leave partial tiles and span several KC, MC and
// NC blocks, against a float64 triple loop.
func TestSgemmMatchesReference(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512")
	}
	shapes := [][3]int{{1, 1, 1}, {8, 32, 5}, {13, 45, 7}, {130, 70, 300}, {7, 2100, 33}, {200, 33, 520}, {3, 5, 0}, {40, 100, 600}}
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					alpha, beta := ab[0], ab[1]
					ar, ac := m, k
					if tA {
						ar, ac = k, m
					}
					br, bc := k, n
					if tB {
						br, bc = n, k
					}
					lda, ldb, ldc := ac+3, bc+1, n+2
					a := make([]float32, max(0, (ar-1)*lda+ac))
					b := make([]float32, max(0, (br-1)*ldb+bc))
					c := make([]float32, (m-1)*ldc+n)
					fill(a, 1)
					fill(b, 2)
					fill(c, 3)
					want := make([]float64, len(c))
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							var s float64
							for p := 0; p < k; p++ {
								var av, bv float32
								if tA {
									av = a[p*lda+i]
								} else {
									av = a[i*lda+p]
								}
								if tB {
									bv = b[j*ldb+p]
								} else {
									bv = b[p*ldb+j]
								}
								s += float64(av) * float64(bv)
							}
							want[i*ldc+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
						}
					}
					Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							got, w := float64(c[i*ldc+j]), want[i*ldc+j]
							if math.Abs(got-w) > 1e-5*float64(k+1)*(1+math.Abs(w)) {
								t.Fatalf("m %d n %d k %d tA %v tB %v alpha %g beta %g: c[%d,%d] = %g, want %g", m, n, k, tA, tB, alpha, beta, i, j, got, w)
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkSgemmConv is the GEMM of a cifar10 3x3 convolution at 32x32 for one sample (as
// nn's BenchmarkSgemmConv, there on OpenBLAS).
func BenchmarkSgemmConv(b *testing.B) {
	const m, n, k = 128, 1024, 1152
	x, y, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
	fill(x, 1)
	fill(y, 2)
	for range b.N {
		Sgemm(false, false, m, n, k, 1, x, k, y, n, 0, c, n)
	}
	b.ReportMetric(float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
}

// BenchmarkSgemmShapes times the GEMM shapes of the cifar10 U-Net (one sample).
func BenchmarkSgemmShapes(b *testing.B) {
	for _, s := range []struct {
		name    string
		tA, tB  bool
		m, n, k int
	}{
		{"fwd32x32", false, false, 128, 1024, 1152},
		{"dW32x32", false, true, 128, 1152, 1024},
		{"fwd8x8", false, false, 256, 64, 2304},
		{"fwd4x4", false, false, 256, 16, 2304},
		{"attnQK", true, false, 256, 256, 256},
		{"attnAV", false, true, 256, 256, 256},
		{"smallFwd", false, false, 32, 1024, 288},
		{"smallDW", false, true, 32, 288, 1024},
		{"smallDX", false, false, 64, 1024, 576},
	} {
		b.Run(s.name, func(b *testing.B) {
			x, y, c := make([]float32, s.m*s.k), make([]float32, s.k*s.n), make([]float32, s.m*s.n)
			fill(x, 1)
			fill(y, 2)
			lda, ldb := s.k, s.n
			if s.tA {
				lda = s.m
			}
			if s.tB {
				ldb = s.k
			}
			for range b.N {
				Sgemm(s.tA, s.tB, s.m, s.n, s.k, 1, x, lda, y, ldb, 0, c, s.n)
			}
			b.ReportMetric(float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
		})
	}
}

// TestSgemmPackedSameBits checks that SgemmPacked on PackA's panels gives Sgemm's bits.
func TestSgemmPackedSameBits(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512")
	}
	for _, sh := range [][3]int{{13, 45, 7}, {130, 70, 600}, {300, 40, 260}, {8, 1100, 33}} {
		m, n, k := sh[0], sh[1], sh[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				lda, ldb := k, n
				if tA {
					lda = m
				}
				if tB {
					ldb = k
				}
				a, b := make([]float32, m*k), make([]float32, k*n)
				fill(a, 5)
				fill(b, 6)
				want, got := make([]float32, m*n), make([]float32, m*n)
				fill(want, 7)
				copy(got, want)
				Sgemm(tA, tB, m, n, k, 1, a, lda, b, ldb, 1, want, n)
				ap := make([]float32, PackedLen(m, k))
				PackA(ap, tA, m, k, a, lda)
				SgemmPacked(ap, tB, m, n, k, b, ldb, 1, got, n)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("m %d n %d k %d tA %v tB %v: c[%d] = %g, Sgemm %g", m, n, k, tA, tB, i, got[i], want[i])
					}
				}
			}
		}
	}
}
