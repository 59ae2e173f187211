package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F32 returns the F32 tensor name of the given shape holding a little-endian copy of v.
// It panics if len(v) != product(shape).
func F32(name string, shape []int, v []float32) Tensor {
	mustLen("F32", name, shape, len(v))
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return Tensor{Name: name, DType: "F32", Shape: cloneShape(shape), Data: b}
}

// F64 returns the F64 tensor name of the given shape holding a little-endian copy of v.
// It panics if len(v) != product(shape).
func F64(name string, shape []int, v []float64) Tensor {
	mustLen("F64", name, shape, len(v))
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return Tensor{Name: name, DType: "F64", Shape: cloneShape(shape), Data: b}
}

// I64 returns the I64 tensor name of the given shape holding a little-endian copy of v.
// It panics if len(v) != product(shape).
func I64(name string, shape []int, v []int64) Tensor {
	mustLen("I64", name, shape, len(v))
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return Tensor{Name: name, DType: "I64", Shape: cloneShape(shape), Data: b}
}

// I32 returns the I32 tensor name of the given shape holding a little-endian copy of v.
// It panics if len(v) != product(shape).
func I32(name string, shape []int, v []int32) Tensor {
	mustLen("I32", name, shape, len(v))
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(x))
	}
	return Tensor{Name: name, DType: "I32", Shape: cloneShape(shape), Data: b}
}

// cloneShape copies shape into a non-nil slice, so a scalar's shape is [] (not nil), as Decode
// returns it.
func cloneShape(shape []int) []int {
	s := make([]int, len(shape))
	copy(s, shape)
	return s
}

func mustLen(dtype, name string, shape []int, n int) {
	want, ok := byteLen(shape, 1)
	if !ok || want != uint64(n) {
		panic(fmt.Sprintf("safetensors: %s(%q): shape %v does not hold %d values", dtype, name, shape, n))
	}
}

// elems checks that t.Data holds exactly product(t.Shape) elements of t.DType (a Tensor built
// by hand may not) and returns that count.
func (t Tensor) elems() (int, error) {
	size, ok := dtypeSize[t.DType]
	if !ok {
		return 0, fmt.Errorf("%w: tensor %q: dtype %q", ErrDType, t.Name, t.DType)
	}
	want, ok := byteLen(t.Shape, size)
	if !ok || want != uint64(len(t.Data)) {
		return 0, fmt.Errorf("%w: tensor %q: %d bytes do not hold shape %v of %s", ErrLayout, t.Name, len(t.Data), t.Shape, t.DType)
	}
	return len(t.Data) / size, nil
}

// Float32s returns t's values as float32: F32 as stored, F64 rounded to nearest.
// Other dtypes give an error wrapping ErrDType.
func (t Tensor) Float32s() ([]float32, error) {
	n, err := t.elems()
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	switch t.DType {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case "F64":
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:])))
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q is %s, want F32 or F64", ErrDType, t.Name, t.DType)
	}
	return out, nil
}

// Float64s returns t's values as float64: F64 as stored, F32 widened exactly.
// Other dtypes give an error wrapping ErrDType.
func (t Tensor) Float64s() ([]float64, error) {
	n, err := t.elems()
	if err != nil {
		return nil, err
	}
	out := make([]float64, n)
	switch t.DType {
	case "F64":
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	case "F32":
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q is %s, want F64 or F32", ErrDType, t.Name, t.DType)
	}
	return out, nil
}

// Int64s returns t's values as int64: I64 as stored, I32 widened.
// Other dtypes give an error wrapping ErrDType.
func (t Tensor) Int64s() ([]int64, error) {
	n, err := t.elems()
	if err != nil {
		return nil, err
	}
	out := make([]int64, n)
	switch t.DType {
	case "I64":
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
	case "I32":
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(t.Data[4*i:])))
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q is %s, want I64 or I32", ErrDType, t.Name, t.DType)
	}
	return out, nil
}

// Int32s returns t's values as int32: I32 as stored, I64 narrowed when every value fits
// (an error wrapping ErrDType names the first that does not). Other dtypes give ErrDType.
func (t Tensor) Int32s() ([]int32, error) {
	n, err := t.elems()
	if err != nil {
		return nil, err
	}
	out := make([]int32, n)
	switch t.DType {
	case "I32":
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
		}
	case "I64":
		for i := range out {
			v := int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("%w: tensor %q: element %d = %d does not fit in I32", ErrDType, t.Name, i, v)
			}
			out[i] = int32(v)
		}
	default:
		return nil, fmt.Errorf("%w: tensor %q is %s, want I32 or I64", ErrDType, t.Name, t.DType)
	}
	return out, nil
}
