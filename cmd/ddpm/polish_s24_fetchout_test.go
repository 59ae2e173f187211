package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPolishS24FetchOutSafetensors: checkpoint fetch --out x.safetensors (missing, or a
// safetensors file under another name) is refused before anything is dialed or written, naming
// what fetch writes and the command that writes safetensors. A missing x.safetensors was taken
// (fetch would have written a bbolt file under that name); an existing one got the hint that
// --init takes weights.
func TestPolishS24FetchOutSafetensors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "x.safetensors")
	weights := filepath.Join(dir, "weights.bin")
	// A safetensors file: u64 little-endian header length, then the JSON header.
	if err := os.WriteFile(weights, append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, "{}"...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{missing, weights} {
		nuWant(t, 2, "ddpm: checkpoint fetch: --out "+out+": fetch writes a checkpoint file (checkpoints.db format), not safetensors; fetch into a .db file, then ddpm checkpoint export FILE --out "+out+" writes its weights as safetensors",
			"checkpoint", "fetch", "127.0.0.1:1", "--step", "1", "--insecure", "--out", out)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Fatalf("%s: %v, want nothing written", missing, err)
	}
	if b, _ := os.ReadFile(weights); string(b) != "\x02\x00\x00\x00\x00\x00\x00\x00{}" {
		t.Fatalf("%s changed: %q", weights, b)
	}
}
