// Package sgemm is the layer engine's float32 matrix multiply on AVX-512: the blocked
// algorithm of Goto and van de Geijn with packed panels and an 8 x 32 micro-kernel in Go
// assembly. OpenBLAS (the engine's other GEMM) picks its kernels when it loads, and an
// environment that pins them to AVX2 (OPENBLAS_CORETYPE=Haswell) leaves a CPU with 512-bit
// FMA units at about 60% of this package's float32 throughput (BenchmarkSgemmConv here and in
// nn: about 75 against 45 GMAC/s on one core). This package is used only where Available.
package sgemm

import "fmt"

// The blocking of sgemm (Goto & van de Geijn, "Anatomy of high-performance matrix
// multiplication", ACM TOMS 2008): a KC x NC block of op(B) is packed into NR-wide panels
// (kept in L2/L3), an MC x KC block of op(A) into MR-high panels (L2), and the micro-kernel
// multiplies one A panel by one B panel (L1) into an MR x NR tile of C.
const (
	sgMR = 8
	sgNR = 32
	sgKC = 256
	sgMC = 128  // a multiple of sgMR
	sgNC = 2048 // a multiple of sgNR

	// directMaxM is the largest m for which a non-transposed b is read in place rather than
	// packed: with few rows of A, each B panel serves too few micro-kernel calls to repay
	// its packing.
	directMaxM = 128
)

// sgemmBufs are one call's packing buffers.
type sgemmBufs struct {
	a, b []float32
	tile [sgMR * sgNR]float32 // the partial tiles at the right and bottom edges of C
}

// sgemmFree recycles packing buffers between calls (and between the pool workers of pgemm)
// without allocating; a channel, unlike a sync.Pool, is not emptied by the garbage collector.
var sgemmFree = make(chan *sgemmBufs, 16)

// sgemm computes c = alpha*op(a)*op(b) + beta*c in float32 for row-major matrices, as gemm,
// on this package's AVX-512 micro-kernel (only when Available). Every element of c is
// the float32 sum of its k products in increasing p, restarted in a fresh accumulator every
// sgKC terms and added to c block by block: the result does not depend on how the caller
// splits c into row or column blocks, so it is the same on any number of threads.
func Sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemm(tA, m, k, len(a), lda, "a")
	run(nil, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// PackedLen is the length of the buffer PackA fills for an m x k matrix.
func PackedLen(m, k int) int { return (m + sgMR - 1) / sgMR * sgMR * k }

// PackA writes op(a) (m x k, stored k x m when tA) into dst (at least PackedLen(m, k) long) in
// the panel layout Sgemm packs it into, every block at once, for SgemmPacked: a matrix that
// multiplies many others is packed once instead of once per product.
func PackA(dst []float32, tA bool, m, k int, a []float32, lda int) {
	checkGemm(tA, m, k, len(a), lda, "a")
	mp := PackedLen(m, 1)
	_ = dst[:PackedLen(m, k)]
	for pc := 0; pc < k; pc += sgKC {
		kc := min(sgKC, k-pc)
		for ic := 0; ic < m; ic += sgMC {
			packA(dst[pc*mp+ic*kc:], tA, a, lda, ic, min(sgMC, m-ic), pc, kc, 1)
		}
	}
}

// SgemmPacked is Sgemm with alpha 1 and an A that PackA packed into ap (same bits as Sgemm).
func SgemmPacked(ap []float32, tB bool, m, n, k int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if len(ap) < PackedLen(m, k) {
		panic(fmt.Sprintf("sgemm: packed a has %d elements, want %d", len(ap), PackedLen(m, k)))
	}
	run(ap, false, tB, m, n, k, 1, nil, 0, b, ldb, beta, c, ldc)
}

// run is Sgemm on a (or on the packed ap when not nil).
func run(ap []float32, tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemm(tB, k, n, len(b), ldb, "b")
	checkGemm(false, m, n, len(c), ldc, "c")
	if m == 0 || n == 0 {
		return
	}
	if beta == 0 && (k == 0 || alpha == 0) {
		for i := 0; i < m; i++ {
			clear(c[i*ldc : i*ldc+n])
		}
		return
	}
	if beta != 0 && beta != 1 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				row[j] *= beta
			}
		}
	}
	if k == 0 || alpha == 0 {
		return
	}
	var buf *sgemmBufs
	select {
	case buf = <-sgemmFree:
	default:
		buf = new(sgemmBufs)
	}
	for jc := 0; jc < n; jc += sgNC {
		nc := min(sgNC, n-jc)
		for pc := 0; pc < k; pc += sgKC {
			kc := min(sgKC, k-pc)
			add := pc > 0 || beta != 0       // else the first K block overwrites c (beta 0 ignores NaNs in c)
			direct := !tB && m <= directMaxM // then m <= sgMC: one ic block
			if direct {
				buf.b = growF32(buf.b, sgNR*kc) // the partial panel at the right edge
			} else {
				buf.b = growF32(buf.b, (nc+sgNR-1)/sgNR*sgNR*kc)
				packB(buf.b, tB, b, ldb, pc, kc, jc, nc)
			}
			for ic := 0; ic < m; ic += sgMC {
				mc := min(sgMC, m-ic)
				pa := ap
				if ap == nil {
					buf.a = growF32(buf.a, (mc+sgMR-1)/sgMR*sgMR*kc)
					packA(buf.a, tA, a, lda, ic, mc, pc, kc, alpha)
					pa = buf.a
				} else {
					pa = ap[pc*PackedLen(m, 1)+ic*kc:]
				}
				for jr := 0; jr < nc; jr += sgNR {
					nr := min(sgNR, nc-jr)
					var bp *float32
					bld := sgNR
					switch {
					case !direct:
						bp = &buf.b[jr*kc]
					case nr == sgNR:
						_ = b[(pc+kc-1)*ldb+jc+jr+sgNR-1] // the panel lies inside b
						bp, bld = &b[pc*ldb+jc+jr], ldb
					default:
						packB(buf.b, false, b, ldb, pc, kc, jc+jr, nr)
						bp = &buf.b[0]
					}
					for ir := 0; ir < mc; ir += sgMR {
						mr := min(sgMR, mc-ir)
						pp := &pa[ir*kc]
						ci := (ic+ir)*ldc + jc + jr
						if mr == sgMR && nr == sgNR {
							_ = c[ci+(sgMR-1)*ldc+sgNR-1] // the tile lies inside c
							sgemmMicro(kc, pp, bp, bld, &c[ci], ldc, add)
							continue
						}
						t := buf.tile[:]
						sgemmMicro(kc, pp, bp, bld, &t[0], sgNR, false)
						for i := 0; i < mr; i++ {
							dst := c[ci+i*ldc : ci+i*ldc+nr]
							src := t[i*sgNR : i*sgNR+nr]
							if !add {
								copy(dst, src)
								continue
							}
							for j, v := range src {
								dst[j] += v
							}
						}
					}
				}
			}
		}
	}
	select {
	case sgemmFree <- buf:
	default:
	}
}

// checkGemm panics unless a row-major matrix stored with row stride ld fits in n elements as
// op(x) of r x c (stored c x r when t).
func checkGemm(t bool, r, c, n, ld int, name string) {
	if t {
		r, c = c, r
	}
	if r < 0 || c < 0 || ld < max(1, c) || (r > 0 && c > 0 && n < (r-1)*ld+c) {
		panic(fmt.Sprintf("sgemm: %s is %d x %d with stride %d in %d elements", name, r, c, ld, n))
	}
}

func growF32(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// packB writes rows [pc, pc+kc) and columns [jc, jc+nc) of op(b) into dst as NR-wide panels:
// panel q holds dst[q*kc*NR + p*NR + j] = op(b)[pc+p, jc+q*NR+j], zero past column nc.
func packB(dst []float32, tB bool, b []float32, ldb, pc, kc, jc, nc int) {
	for q := 0; q*sgNR < nc; q++ {
		nr := min(sgNR, nc-q*sgNR)
		pan := dst[q*kc*sgNR : (q+1)*kc*sgNR]
		j0 := jc + q*sgNR
		if !tB { // op(b)[p, j] = b[p*ldb+j]: a contiguous run of nr per row
			for p := 0; p < kc; p++ {
				d := pan[p*sgNR : (p+1)*sgNR]
				copy(d, b[(pc+p)*ldb+j0:(pc+p)*ldb+j0+nr])
				clear(d[nr:])
			}
			continue
		}
		// op(b)[p, j] = b[j*ldb+p]: a transpose, eight columns of the panel at a time (eight
		// contiguous reads, eight contiguous writes per p).
		j := 0
		for ; j+8 <= nr; j += 8 {
			r := b[(j0+j)*ldb+pc:]
			s0, s1, s2, s3 := r[:kc], r[ldb:ldb+kc], r[2*ldb:2*ldb+kc], r[3*ldb:3*ldb+kc]
			s4, s5, s6, s7 := r[4*ldb:4*ldb+kc], r[5*ldb:5*ldb+kc], r[6*ldb:6*ldb+kc], r[7*ldb:7*ldb+kc]
			for p := range s0 {
				d := pan[p*sgNR+j : p*sgNR+j+8]
				d[0], d[1], d[2], d[3] = s0[p], s1[p], s2[p], s3[p]
				d[4], d[5], d[6], d[7] = s4[p], s5[p], s6[p], s7[p]
			}
		}
		for ; j < nr; j++ {
			src := b[(j0+j)*ldb+pc : (j0+j)*ldb+pc+kc]
			for p, v := range src {
				pan[p*sgNR+j] = v
			}
		}
		if nr < sgNR {
			for p := 0; p < kc; p++ {
				clear(pan[p*sgNR+nr : (p+1)*sgNR])
			}
		}
	}
}

// packA writes alpha times rows [ic, ic+mc) and columns [pc, pc+kc) of op(a) into dst as
// MR-high panels: panel r holds dst[r*kc*MR + p*MR + i] = alpha*op(a)[ic+r*MR+i, pc+p], zero
// past row mc.
func packA(dst []float32, tA bool, a []float32, lda, ic, mc, pc, kc int, alpha float32) {
	for r := 0; r*sgMR < mc; r++ {
		mr := min(sgMR, mc-r*sgMR)
		pan := dst[r*kc*sgMR : (r+1)*kc*sgMR]
		i0 := ic + r*sgMR
		if tA { // op(a)[i, p] = a[p*lda+i]: a contiguous run of mr per column
			for p := 0; p < kc; p++ {
				d := pan[p*sgMR : (p+1)*sgMR]
				src := a[(pc+p)*lda+i0 : (pc+p)*lda+i0+mr]
				for i, v := range src {
					d[i] = alpha * v
				}
				clear(d[mr:])
			}
			continue
		}
		if mr == sgMR { // op(a)[i, p] = a[i*lda+p]: a transpose, all eight rows at once
			r := a[i0*lda+pc:]
			s0, s1, s2, s3 := r[:kc], r[lda:lda+kc], r[2*lda:2*lda+kc], r[3*lda:3*lda+kc]
			s4, s5, s6, s7 := r[4*lda:4*lda+kc], r[5*lda:5*lda+kc], r[6*lda:6*lda+kc], r[7*lda:7*lda+kc]
			for p := range s0 {
				d := pan[p*sgMR : p*sgMR+8]
				d[0], d[1], d[2], d[3] = alpha*s0[p], alpha*s1[p], alpha*s2[p], alpha*s3[p]
				d[4], d[5], d[6], d[7] = alpha*s4[p], alpha*s5[p], alpha*s6[p], alpha*s7[p]
			}
			continue
		}
		for i := 0; i < mr; i++ {
			src := a[(i0+i)*lda+pc : (i0+i)*lda+pc+kc]
			for p, v := range src {
				pan[p*sgMR+i] = alpha * v
			}
		}
		if mr < sgMR {
			for p := 0; p < kc; p++ {
				clear(pan[p*sgMR+mr : (p+1)*sgMR])
			}
		}
	}
}
