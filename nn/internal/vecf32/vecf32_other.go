//go:build !amd64 || purego

package vecf32

// Available is false: no vector loops for this architecture or build.
const Available = false

func silu16(y, sig, x *float32, n int, sc, sh float32) { panic("vecf32: no AVX-512") }

func expShift16(row *float32, n int, mx float32) { panic("vecf32: no AVX-512") }
