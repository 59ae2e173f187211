package unet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"ddpm/internal/safetensors"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, _ := New(cfg)
	m.Init(4)
	path := filepath.Join(t.TempDir(), "ema.safetensors")
	if err := WriteSafetensors(path, m.Tensors(), m.Params(), map[string]string{"preset": "tiny"}); err != nil {
		t.Fatal(err)
	}
	m2, _ := New(cfg)
	meta, err := ReadSafetensors(path, m2.Tensors(), m2.Params())
	if err != nil {
		t.Fatal(err)
	}
	if meta["preset"] != "tiny" {
		t.Fatalf("metadata %v", meta)
	}
	for i, v := range m.Params() {
		if m2.Params()[i] != v {
			t.Fatalf("parameter %d: %g, wrote %g", i, m2.Params()[i], v)
		}
	}
	// The file's tensors carry the PyTorch names and shapes.
	ts, _, err := safetensors.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := safetensors.Find(ts, "d1_attn.q.weight"); !ok || len(tt.Shape) != 4 || tt.Shape[0] != 32 || tt.Shape[2] != 1 {
		t.Fatalf("d1_attn.q.weight: %v %v", ok, tt.Shape)
	}

	// A model of another shape is refused and its arena left alone.
	small, _ := Preset("small")
	m3, _ := New(small)
	if _, err := ReadSafetensors(path, m3.Tensors(), m3.Params()); !errors.Is(err, ErrWeights) {
		t.Fatalf("tiny weights into small: err = %v, want ErrWeights", err)
	}
	for _, v := range m3.Params() {
		if v != 0 {
			t.Fatal("failed read changed the arena")
		}
	}
	// A missing file is an operational error, not ErrWeights.
	if _, err := ReadSafetensors(filepath.Join(t.TempDir(), "none"), m2.Tensors(), m2.Params()); err == nil || errors.Is(err, ErrWeights) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}
