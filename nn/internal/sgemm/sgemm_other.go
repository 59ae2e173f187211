//go:build !amd64 || purego

package sgemm

// Available is false: there is no micro-kernel for this architecture or build.
const Available = false

func sgemmMicro(kc int, a, b *float32, ldb int, c *float32, ldc int, add bool) {
	panic("sgemm: no micro-kernel on this architecture")
}
