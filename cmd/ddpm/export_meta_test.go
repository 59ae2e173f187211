package main

import (
	"context"
	"path/filepath"
	"testing"

	"ddpm/internal/safetensors"
)

// TestExportMetadataAgrees: checkpoint export --ema and sample --export-weights of the same
// checkpoint write the same safetensors metadata: the U-Net preset under "model" and the
// weights as "ema" (export wrote "preset", sample "EMA"); without --ema / with --raw, "params".
func TestExportMetadataAgrees(t *testing.T) {
	dir, file := evalFixture(t)
	tmp := t.TempDir()
	read := func(args ...string) map[string]string {
		t.Helper()
		if _, err := runCLI(t, context.Background(), nil, args...); err != nil {
			t.Fatalf("ddpm %v: %v", args, err)
		}
		_, meta, err := safetensors.Read(args[len(args)-1])
		if err != nil {
			t.Fatal(err)
		}
		return meta
	}
	for _, tc := range []struct {
		export, sample []string
		weights        string
	}{
		{[]string{"--ema"}, nil, "ema"},
		{nil, []string{"--raw"}, "params"},
	} {
		ex := read(append(append([]string{"checkpoint", "export", file}, tc.export...), "--out", filepath.Join(tmp, "e"+tc.weights+".safetensors"))...)
		sa := read(append(append([]string{"sample", "--checkpoint", dir}, tc.sample...), "--export-weights", filepath.Join(tmp, "s"+tc.weights+".safetensors"))...)
		for _, k := range []string{"format", "model", "weights", "step", "config_hash"} {
			if ex[k] != sa[k] {
				t.Errorf("metadata %q: export %q, sample %q", k, ex[k], sa[k])
			}
		}
		if ex["model"] != "tiny" || ex["weights"] != tc.weights || ex["format"] != "pt" {
			t.Errorf("export metadata %v, want model tiny, weights %s, format pt", ex, tc.weights)
		}
		if _, ok := ex["preset"]; ok {
			t.Errorf("export metadata %v still has preset", ex)
		}
	}
}
