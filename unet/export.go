package unet

import (
	"fmt"
	"slices"

	"ddpm/internal/safetensors"
	"ddpm/nn"
)

// WriteSafetensors writes arena (the parameters, the EMA weights or any arena of the same
// layout) to path as one tensor per entry of infos, under the PyTorch state_dict names and
// shapes: F32 for float32 arenas, F64 for float64. meta goes into the file's __metadata__.
// The write is atomic (safetensors.Write). It panics if len(arena) does not cover infos.
func WriteSafetensors[T nn.Float](path string, infos []nn.ParamInfo, arena []T, meta map[string]string) error {
	ts := make([]safetensors.Tensor, len(infos))
	for i, ti := range infos {
		if ti.Offset+ti.Len > len(arena) {
			panic(fmt.Sprintf("unet: WriteSafetensors: %s ends at %d, arena has %d", ti.Name, ti.Offset+ti.Len, len(arena)))
		}
		v := arena[ti.Offset : ti.Offset+ti.Len]
		switch v := any(v).(type) {
		case []float32:
			ts[i] = safetensors.F32(ti.Name, ti.Shape, v)
		case []float64:
			ts[i] = safetensors.F64(ti.Name, ti.Shape, v)
		}
	}
	if err := safetensors.Write(path, ts, meta); err != nil {
		return fmt.Errorf("unet: writing %s: %w", path, err)
	}
	return nil
}

// ReadSafetensors reads path into dst (an arena of the layout infos describes) and returns the
// file's metadata. Every name of infos must be present with its exact shape, as F32 or F64
// (converted to T); a missing, extra or misshapen tensor gives an error wrapping ErrWeights
// and leaves dst unchanged. Codec errors wrap the safetensors package's sentinels.
func ReadSafetensors[T nn.Float](path string, infos []nn.ParamInfo, dst []T) (map[string]string, error) {
	ts, meta, err := safetensors.Read(path)
	if err != nil {
		return nil, fmt.Errorf("unet: reading %s: %w", path, err)
	}
	if len(ts) != len(infos) {
		return nil, fmt.Errorf("%w: %s holds %d tensors, the model has %d", ErrWeights, path, len(ts), len(infos))
	}
	vals := make([][]T, len(infos))
	for i, ti := range infos {
		t, ok := safetensors.Find(ts, ti.Name)
		if !ok {
			return nil, fmt.Errorf("%w: %s has no tensor %q", ErrWeights, path, ti.Name)
		}
		if !slices.Equal(t.Shape, ti.Shape) {
			return nil, fmt.Errorf("%w: %s: %q has shape %v, the model wants %v", ErrWeights, path, ti.Name, t.Shape, ti.Shape)
		}
		vals[i] = make([]T, ti.Len)
		switch v := any(vals[i]).(type) {
		case []float32:
			f, err := t.Float32s()
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrWeights, path, err)
			}
			copy(v, f)
		case []float64:
			f, err := t.Float64s()
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrWeights, path, err)
			}
			copy(v, f)
		}
	}
	for i, ti := range infos {
		copy(dst[ti.Offset:ti.Offset+ti.Len], vals[i])
	}
	return meta, nil
}
