//go:build cgo && !purego

package nn

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
int blas_thread_shutdown_(void);
*/
import "C"

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"

	"ddpm/nn/internal/sgemm"
)

// Backend names the BLAS implementation GEMMs run on.
const Backend = "openblas"

// init routes gonum's BLAS to OpenBLAS and makes each OpenBLAS call single-threaded: the layers
// split large GEMMs across goroutines themselves (pgemm), which avoids OpenBLAS's worker threads
// competing with the Go scheduler for the same cores. Setting the thread count to 1 is not
// enough: the library starts one worker thread per core when it loads, and those keep waking
// up and yielding (measured: about 13% of the CPU time of a small-model train step on two
// cores); so the workers are shut down too. With one thread OpenBLAS runs every call on the
// calling thread and starts no workers again.
func init() {
	C.openblas_set_num_threads(1)
	C.blas_thread_shutdown_()
	blas32.Use(netlib.Implementation{})
	blas64.Use(netlib.Implementation{})
}

// BackendCore names the kernel set float32 GEMMs run on: "avx512" where the CPU has AVX-512
// (this package's own micro-kernel, internal/sgemm), else OpenBLAS's core name, chosen when the
// library loads from the CPU or from OPENBLAS_CORETYPE. float64 GEMMs always run on OpenBLAS.
// On this project's AMD EPYC machines an environment that sets OPENBLAS_CORETYPE=Haswell
// gives OpenBLAS AVX2 kernels (BenchmarkSgemmConv: about 45 GMAC/s on one core); the AVX-512
// kernel reaches about 70 on the same GEMM.
func BackendCore() string {
	if sgemm.Available {
		return "avx512"
	}
	return C.GoString(C.openblas_get_corename())
}
