//go:build amd64 && !purego

package sgemm

import "golang.org/x/sys/cpu"

// sgemmKernel8x32 is the AVX-512 micro-kernel of sgemm_amd64.s. It computes the product of a
// packed A panel a [kc][8] and a B panel b of kc rows of 32 (row stride ldb elements: 32 when
// packed) into the 8 x 32 tile of c (row stride ldc elements):
// s[i][j] = sum_p a[p*8+i] * b[p*ldb+j], the kc products summed in order
// p = 0, 1, ... by fused multiply-adds into one float32 accumulator per element; then
// c[i*ldc+j] += s[i][j] when add, else c[i*ldc+j] = s[i][j].
//
//go:noescape
func sgemmKernel8x32(kc int, a, b *float32, ldb int, c *float32, ldc int, add bool)

// Available reports whether the CPU and the OS run AVX-512 (512-bit registers saved on
// context switches), which the kernel needs.
var Available = cpu.X86.HasAVX512F

func sgemmMicro(kc int, a, b *float32, ldb int, c *float32, ldc int, add bool) {
	sgemmKernel8x32(kc, a, b, ldb, c, ldc, add)
}
