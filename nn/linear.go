package nn

import "fmt"

// Linear is y = x W^T + b for x [B, In], W [Out, In] (PyTorch layout), b [Out], y [B, Out].
type Linear[T Float] struct {
	In, Out      int
	Weight, Bias *Param[T]

	x     []T
	b     int
	y, dx []T
}

// NewLinear registers name.weight [out, in] and name.bias [out] in a.
func NewLinear[T Float](a *Arena[T], name string, in, out int) *Linear[T] {
	if in <= 0 || out <= 0 {
		panic(fmt.Sprintf("nn: NewLinear %q: in %d out %d", name, in, out))
	}
	return &Linear[T]{In: in, Out: out,
		Weight: a.NewParam(join(name, "weight"), out, in),
		Bias:   a.NewParam(join(name, "bias"), out)}
}

// Forward returns y [b, Out] for x [b, In]; it panics if len(x) != b*In.
func (l *Linear[T]) Forward(x []T, b int) []T {
	if len(x) != b*l.In {
		panic(fmt.Sprintf("nn: Linear %q: len(x) = %d, want %d*%d", l.Weight.Name, len(x), b, l.In))
	}
	l.x, l.b = x, b
	l.y = grow(l.y, b*l.Out)
	for s := 0; s < b; s++ {
		copy(l.y[s*l.Out:(s+1)*l.Out], l.Bias.W)
	}
	pgemm(false, true, b, l.Out, l.In, 1, x, l.In, l.Weight.W, l.In, 1, l.y, l.Out)
	return l.y
}

// Backward accumulates dW += dy^T x and db += sum_b dy, and returns dx = dy W [b, In].
func (l *Linear[T]) Backward(dy []T) []T {
	if len(dy) != l.b*l.Out {
		panic(fmt.Sprintf("nn: Linear %q: len(dy) = %d, want %d", l.Weight.Name, len(dy), l.b*l.Out))
	}
	for s := 0; s < l.b; s++ {
		for o, v := range dy[s*l.Out : (s+1)*l.Out] {
			l.Bias.G[o] += v
		}
	}
	pgemm(true, false, l.Out, l.In, l.b, 1, dy, l.Out, l.x, l.In, 1, l.Weight.G, l.In)
	l.dx = grow(l.dx, l.b*l.In)
	pgemm(false, false, l.b, l.In, l.Out, 1, dy, l.Out, l.Weight.W, l.In, 0, l.dx, l.In)
	return l.dx
}
