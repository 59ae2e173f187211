package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/internal/localrun"
)

// TestExportNeverReplacesRunInit: checkpoint export --out W.safetensors --force refuses the
// weights that a ddpm local run names as its --init in local.json (a run in a folder beside W,
// or one of W's parent folders): --resume would start from other weights than the run's first
// session. One line, exit 2, W intact. Weights no run names are replaced with --force.
func TestExportNeverReplacesRunInit(t *testing.T) {
	_, file := evalFixture(t)
	other := t.TempDir()
	export := func(out string, force bool) error {
		args := []string{"checkpoint", "export", file, "--out", out}
		if force {
			args = append(args, "--force")
		}
		_, err := runCLI(t, context.Background(), nil, args...)
		return err
	}
	beside := filepath.Join(other, "w.safetensors")               // ddpm local --out other/run --init other/w.safetensors
	inside := filepath.Join(other, "run2", "in", "w.safetensors") // a run whose --init lies in its own folder
	free := filepath.Join(other, "free.safetensors")
	if err := os.MkdirAll(filepath.Dir(inside), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{beside, inside, free} {
		if err := export(p, false); err != nil {
			t.Fatalf("export %s: %v", p, err)
		}
	}
	for run, init := range map[string]string{filepath.Join(other, "run"): beside, filepath.Join(other, "run2"): inside} {
		if err := localrun.WriteManifest(run, localrun.Manifest{ConfigHash: "x", Coordinators: 1, Trainers: 1, Init: init}); err != nil {
			t.Fatal(err)
		}
	}
	sums := map[string][32]byte{beside: fileSum(t, beside), inside: fileSum(t, inside)}
	for p, run := range map[string]string{beside: filepath.Join(other, "run"), inside: filepath.Join(other, "run2")} {
		args := []string{"checkpoint", "export", file, "--out", p, "--force"}
		wantExit(t, args, export(p, true), 2, "checkpoint export: --out "+p+" is the --init weights of the run in "+run+
			", the input of a run; an output never replaces one (nothing was written)")
	}
	for p, s := range sums {
		if fileSum(t, p) != s {
			t.Errorf("%s changed", p)
		}
	}
	if err := export(free, true); err != nil {
		t.Errorf("export --force over weights no run names: %v", err)
	}
}
