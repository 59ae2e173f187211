//go:build !cgo || purego

package nn

// Backend names the BLAS implementation GEMMs run on.
const Backend = "gonum"
