// Package nn is the project's layer engine: the dozen layer types of the DDPM U-Net, each with an
// explicit Forward and Backward over preallocated buffers (DESIGN.md section 4).
//
// Conventions, shared by every layer:
//
//   - Tensors are NCHW, row-major, in flat slices; shapes travel as explicit ints. "x is
//     [B, C, H, W]" means len(x) == B*C*H*W with x[((b*C+c)*H+i)*W+j] the element (b, c, i, j).
//   - Layers are generic over the element type T (float32 for training, float64 for the tight
//     finite-difference and parity tests); both instantiations run the same code.
//   - Parameters live in one flat arena (Arena.Data) and their gradients in a second arena of
//     the same layout (Arena.Grad). A layer holds Param views into both. The arena order is the
//     order in which the layers were constructed; the U-Net constructs them in the order of the
//     reference PyTorch state_dict.
//   - Forward(x, ...) keeps a reference to x (it must not change until Backward has run) and
//     returns a buffer owned by the layer, valid until the layer's next Forward. Backward(dy)
//     never modifies dy, accumulates (+=) parameter gradients into the gradient arena, and
//     returns the input gradient in a buffer owned by the layer. Buffers are allocated when the
//     batch shape first appears and reused while it stays the same: a training step allocates
//     nothing.
//   - Shape mismatches are programmer errors and panic with an "nn: " message.
//
// float32 GEMM runs on the package's own AVX-512 kernel (internal/sgemm: packed panels and an
// 8 x 32 micro-kernel in Go assembly) where the CPU has AVX-512. Otherwise, and for float64,
// GEMM goes through gonum's blas32/blas64 interfaces: the default build routes them to OpenBLAS
// via gonum.org/v1/netlib (cgo, Debian libopenblas-dev) with OpenBLAS's own threading off; the
// build tag purego keeps gonum's own pure-Go BLAS (and leaves the AVX-512 kernel out).
// Parallelism is the engine's: same convolutions give whole sample groups (forward) or the dW
// and dx halves of a group (backward) to different goroutines; other large GEMMs are split into
// one block per GOMAXPROCS; the non-GEMM layers split their loops over samples, groups or
// channels the same way. No split changes the order of any sum, so results do not depend on
// the number of CPUs.
package nn
