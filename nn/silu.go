package nn

// SiLU is the elementwise y = x * sigmoid(x) (Swish; the original's nonlinearity), for tensors of
// any shape.
type SiLU[T Float] struct {
	x, y, dx []T
}

// Forward returns y = x*sigmoid(x).
func (l *SiLU[T]) Forward(x []T) []T {
	l.x = x
	l.y = grow(l.y, len(x))
	for i, v := range x {
		l.y[i] = v / (1 + expT(-v))
	}
	return l.y
}

// Backward returns dx = dy * sigmoid(x) * (1 + x*(1 - sigmoid(x))).
func (l *SiLU[T]) Backward(dy []T) []T {
	if len(dy) != len(l.x) {
		panic("nn: SiLU.Backward: len(dy) != len(x)")
	}
	l.dx = grow(l.dx, len(dy))
	for i, v := range l.x {
		s := 1 / (1 + expT(-v))
		l.dx[i] = dy[i] * s * (1 + v*(1-s))
	}
	return l.dx
}
