//go:build cgo && !purego

package nn

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
*/
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"
)

// Backend names the BLAS implementation GEMMs run on.
const Backend = "openblas"

// init routes gonum's BLAS to OpenBLAS and makes each OpenBLAS call single-threaded: the layers
// split large GEMMs across goroutines themselves (pgemm), which avoids OpenBLAS's spinning
// worker threads competing with the Go scheduler for the same cores.
func init() {
	C.openblas_set_num_threads(1)
	blas32.Use(netlib.Implementation{})
	blas64.Use(netlib.Implementation{})
}

// BackendCore names the kernel set the BLAS runs: OpenBLAS's core name, chosen when the library
// loads from the CPU or from OPENBLAS_CORETYPE. On this project's AMD EPYC machines OpenBLAS
// 0.3.21 detects "Cooperlake" (AVX-512), whose SGEMM runs about 1.5 times faster than the AVX2
// "Haswell" kernels (BenchmarkSgemmConv: about 47 vs 29 GMAC/s); an environment that sets
// OPENBLAS_CORETYPE=Haswell gives that up.
func BackendCore() string { return C.GoString(C.openblas_get_corename()) }
