//go:build amd64 && !purego

package vecf32

import "golang.org/x/sys/cpu"

// Available reports whether the CPU and the OS run AVX-512.
var Available = cpu.X86.HasAVX512F

//go:noescape
func silu16(y, sig, x *float32, n int, sc, sh float32)

//go:noescape
func expShift16(row *float32, n int, mx float32)
