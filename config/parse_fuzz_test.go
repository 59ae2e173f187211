package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the run-config loader (issue 13). A rejected file returns an
// error wrapping ErrLoad or ErrInvalid and naming the path; an accepted one is valid and survives
// Marshal -> Parse -> Validate with the same Hash.
func FuzzLoad(f *testing.F) {
	for _, name := range Presets() {
		r, err := Preset(name)
		if err != nil {
			f.Fatal(err)
		}
		r.Dataset = "/data/" + name
		f.Add(r.Marshal())
	}
	f.Add([]byte("preset: mnist\nlr: 1e-4\n"))
	f.Add([]byte("preset: cifar10\ndataset: /d\nglobal_batch: -3\n"))
	f.Add([]byte("preset: nope\n"))
	f.Add([]byte("lr: [1, 2]\n"))
	f.Add([]byte("{\"preset\": \"mnist\", \"preset\": \"cifar10\"}"))
	f.Add([]byte("preset: mnist\nlr: 1e-4\nlr: 2e-4\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "run.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := Load(p)
		if err != nil {
			if !errors.Is(err, ErrLoad) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error wraps neither ErrLoad nor ErrInvalid: %v", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("Load returned an invalid config: %v", err)
		}
		again, err := Parse(r.Marshal())
		if err != nil {
			t.Fatalf("Parse(Marshal(r)): %v\n%s", err, r.Marshal())
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("Parse(Marshal(r)) invalid: %v", err)
		}
		if again.Hash() != r.Hash() {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", r.Marshal(), again.Marshal())
		}
	})
}
