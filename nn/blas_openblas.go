//go:build cgo && !purego

package nn

/*
#cgo LDFLAGS: -lopenblas
void openblas_set_num_threads(int);
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
