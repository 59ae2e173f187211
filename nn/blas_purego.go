//go:build !cgo || purego

package nn

// Backend names the BLAS implementation GEMMs run on.
const Backend = "gonum"

// BackendCore names the kernel set the BLAS runs: gonum's pure-Go kernels here.
func BackendCore() string { return "go" }
