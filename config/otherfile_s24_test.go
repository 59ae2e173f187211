package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestOtherFileS24: a trainer volume's fault record and ddpm logs (text and JSON) given as a run
// config are named for what they are (they were "unknown field" and "the document is a string"),
// with the run.yaml beside them, and their folder names its run.yaml; that run.yaml itself still
// loads.
func TestOtherFileS24(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "run.yaml")
	r, err := Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("run.yaml", string(r.Marshal()))
	fault := write("fault.json", `{"kind":"data","config":"ab12","err":"shard 3: checksum","record":7}`+"\n")
	textLog := write("trainer-0.log", `time=2026-12-01T00:00:00Z level=INFO msg="standalone trainer" config=ab12`+"\n")
	jsonLog := write("trainer-1.log", `{"time":"2026-12-01T00:00:00Z","level":"INFO","msg":"joined"}`+"\n"+`{"time":"2026-12-01T00:00:01Z","level":"INFO","msg":"step"}`+"\n")
	for path, what := range map[string]string{fault: "a trainer's fault record", textLog: "a ddpm log", jsonLog: "a ddpm log"} {
		_, err := Load(path)
		want := path + " is " + what + ", not a run config; the run config beside it is " + yaml
		if err == nil || err.Error() != want || !errors.Is(err, ErrLoad) {
			t.Errorf("Load(%s): %v\nwant %s (ErrLoad)", filepath.Base(path), err, want)
		}
	}
	// The folder itself (a run folder, a trainer's data dir) names the run.yaml in it.
	want := dir + ": cannot load run config: a folder, not a file (give the run config in it, " + yaml + ")"
	if _, err := Load(dir); err == nil || err.Error() != want || !errors.Is(err, ErrLoad) {
		t.Errorf("Load(folder): %v\nwant %s (ErrLoad)", err, want)
	}
	if got, err := Load(yaml); err != nil || got.Hash() != r.Hash() {
		t.Fatalf("Load(run.yaml): %v", err)
	}
}
