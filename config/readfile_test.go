package config

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestConfigFileMissingOrFolder: a --config (Load, and Flags.Resolve as every command takes it)
// that does not exist, or that is a folder, is one line starting with the path as Load's other
// lines do; it was "cannot load run config: open run.yaml: no such file or directory" and
// "cannot load run config: read DIR: is a directory".
func TestConfigFileMissingOrFolder(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "run.yaml")
	for path, want := range map[string]string{
		missing: missing + ": cannot load run config: no such file",
		dir:     dir + ": cannot load run config: a folder, not a file (give the run config's YAML file)",
	} {
		if _, err := Load(path); !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("Load(%s): %v, want %s", path, err, want)
		}
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse([]string{"--config", path}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Resolve(); !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("--config %s: %v, want %s", path, err, want)
		}
	}
}
