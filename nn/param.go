package nn

import (
	"fmt"
	"strings"
)

// ParamInfo describes one parameter tensor inside the flat arenas: its name (the PyTorch
// state_dict key), its PyTorch shape, and the element range [Offset, Offset+Len).
type ParamInfo struct {
	Name   string
	Shape  []int
	Offset int
	Len    int
}

// Param is one parameter tensor: W views its values in the parameter arena, G its gradient in
// the gradient arena (same offsets). Both are nil until the arena is allocated.
type Param[T Float] struct {
	ParamInfo
	W, G []T
}

// Arena collects the parameters of a model while its layers are constructed, then allocates
// the parameter and gradient arenas in one piece each and binds every Param to its views.
type Arena[T Float] struct {
	params []*Param[T]
	names  map[string]bool
	n      int
	data   []T
	grad   []T
}

// NewParam registers a parameter of the given name and shape and returns its (not yet bound)
// Param. It panics after Alloc, on a duplicate name, or on a non-positive dimension.
func (a *Arena[T]) NewParam(name string, shape ...int) *Param[T] {
	if a.data != nil {
		panic("nn: Arena.NewParam after Alloc")
	}
	if a.names == nil {
		a.names = map[string]bool{}
	}
	if a.names[name] {
		panic(fmt.Sprintf("nn: Arena.NewParam: duplicate name %q", name))
	}
	n := 1
	for _, d := range shape {
		if d <= 0 {
			panic(fmt.Sprintf("nn: Arena.NewParam: %q has shape %v", name, shape))
		}
		n *= d
	}
	a.names[name] = true
	p := &Param[T]{ParamInfo: ParamInfo{Name: name, Shape: append([]int(nil), shape...), Offset: a.n, Len: n}}
	a.params = append(a.params, p)
	a.n += n
	return p
}

// Alloc allocates both arenas (zeroed) and binds every registered Param. It panics if called twice.
func (a *Arena[T]) Alloc() {
	if a.data != nil {
		panic("nn: Arena.Alloc called twice")
	}
	a.data = make([]T, a.n)
	a.grad = make([]T, a.n)
	for _, p := range a.params {
		p.W = a.data[p.Offset : p.Offset+p.Len : p.Offset+p.Len]
		p.G = a.grad[p.Offset : p.Offset+p.Len : p.Offset+p.Len]
	}
}

// Len is the total number of parameter elements registered so far.
func (a *Arena[T]) Len() int { return a.n }

// Data is the parameter arena (nil before Alloc).
func (a *Arena[T]) Data() []T { return a.data }

// Grad is the gradient arena (nil before Alloc).
func (a *Arena[T]) Grad() []T { return a.grad }

// Params lists the parameters in arena order.
func (a *Arena[T]) Params() []*Param[T] { return a.params }

// Infos lists the parameters' descriptions in arena order (a fresh slice).
func (a *Arena[T]) Infos() []ParamInfo {
	out := make([]ParamInfo, len(a.params))
	for i, p := range a.params {
		out[i] = p.ParamInfo
		out[i].Shape = append([]int(nil), p.Shape...)
	}
	return out
}

// join builds a dotted parameter name, skipping empty parts.
func join(parts ...string) string {
	var nonEmpty []string
	for _, p := range parts {
		if p != "" {
			nonEmpty = append(nonEmpty, p)
		}
	}
	return strings.Join(nonEmpty, ".")
}

// Workspace holds scratch buffers shared by the layers of one model (im2col matrices and
// transposed or packed GEMM operands). Layers use it only inside one Forward or Backward call
// (whose parallel parts each take slots of their own), so one Workspace serves a whole model
// run on one goroutine; it is not safe for concurrent use.
type Workspace[T Float] struct {
	slots [5][]T
	// chunks holds the slots of the chunks of a parallelForChunks after the first (which uses
	// slots), made before the loop starts so that its bodies only touch their own entry.
	chunks [][5][]T
}

func (w *Workspace[T]) slot(i, n int) []T {
	w.slots[i] = grow(w.slots[i], n)
	return w.slots[i]
}

// reserveChunks makes room for the chunk slots of a parallelForChunks (call it before the loop).
func (w *Workspace[T]) reserveChunks() {
	for len(w.chunks) < maxChunks()-1 {
		w.chunks = append(w.chunks, [5][]T{})
	}
}

// chunkSlot is slot i of parallel chunk c (chunk 0's are the plain slots).
func (w *Workspace[T]) chunkSlot(c, i, n int) []T {
	if c == 0 {
		return w.slot(i, n)
	}
	s := &w.chunks[c-1][i]
	*s = grow(*s, n)
	return *s
}
