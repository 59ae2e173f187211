package unet

import (
	"path/filepath"
	"slices"
	"testing"

	"ddpm/internal/safetensors"
)

// TestPresetsOfWeights: weights written from the tiny and the small model are named as theirs
// by their tensors' shapes alone (no metadata); a file with one tensor missing or one shape
// changed is the weights of no preset; a file that is not safetensors is an error.
func TestPresetsOfWeights(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"tiny", "small"} {
		cfg, _ := Preset(name)
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name+".safetensors")
		if err := WriteSafetensors(path, m.Tensors(), m.Params(), nil); err != nil {
			t.Fatal(err)
		}
		got, err := PresetsOfWeights(path)
		if err != nil || !slices.Equal(got, []string{name}) {
			t.Errorf("PresetsOfWeights(%s weights) = %q, %v; want [%s]", name, got, err, name)
		}
	}
	ts, _, err := safetensors.Read(filepath.Join(dir, "tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short.safetensors")
	if err := safetensors.Write(short, ts[1:], nil); err != nil {
		t.Fatal(err)
	}
	ts[0].Shape = append([]int{1}, ts[0].Shape...)
	reshaped := filepath.Join(dir, "reshaped.safetensors")
	if err := safetensors.Write(reshaped, ts, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{short, reshaped} {
		if got, err := PresetsOfWeights(p); err != nil || len(got) != 0 {
			t.Errorf("PresetsOfWeights(%s) = %q, %v; want none", filepath.Base(p), got, err)
		}
	}
	if _, err := PresetsOfWeights(filepath.Join(dir, "absent.safetensors")); err == nil {
		t.Error("PresetsOfWeights of a missing file: no error")
	}
}
