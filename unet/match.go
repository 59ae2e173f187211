package unet

import (
	"fmt"
	"slices"

	"ddpm/internal/safetensors"
	"ddpm/nn"
)

// PresetsOfWeights names, in sorted order, the presets (PresetNames) whose parameter tensors are
// exactly those of the safetensors file at path: the same names with the same shapes, and no
// other tensor. Dtypes and values are not looked at. Presets with one architecture under two
// names (lsun256 and celebahq256) are both named. An empty result means the file is the
// weights of no preset (PyTorch weights of another network, a custom Config, a damaged file);
// an error is only for a file that cannot be read or decoded, wrapping the safetensors
// package's errors. The file is read whole; no model arena is allocated.
func PresetsOfWeights(path string) ([]string, error) {
	ts, _, err := safetensors.Read(path)
	if err != nil {
		return nil, fmt.Errorf("unet: reading %s: %w", path, err)
	}
	var names []string
	for _, name := range PresetNames() {
		n, err := build[float32](presets[name])
		if err != nil {
			return nil, err
		}
		if sameTensors(ts, n.Tensors()) {
			names = append(names, name)
		}
	}
	return names, nil
}

// sameTensors: ts holds exactly the tensors infos lists, each with its shape.
func sameTensors(ts []safetensors.Tensor, infos []nn.ParamInfo) bool {
	if len(ts) != len(infos) {
		return false
	}
	for _, ti := range infos {
		t, ok := safetensors.Find(ts, ti.Name)
		if !ok || !slices.Equal(t.Shape, ti.Shape) {
			return false
		}
	}
	return true
}
