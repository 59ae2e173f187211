package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/dataset"
	"ddpm/internal/localrun"
)

// TestWorldFlagsNamed: a trainer count or global batch that contradicts the preset's or config's
// world size is one line naming the flag as the user typed it and where the other value comes
// from, in ddpm local and ddpm trainer (config.Flags.Resolve), not the YAML fields' rule.
func TestWorldFlagsNamed(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "fresh")
	cfg := filepath.Join(t.TempDir(), "run.yaml")
	if err := os.WriteFile(cfg, []byte("preset: mnist\nsteps: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "--trainers", "5", "--out", fresh}, "--trainers 5: more than max_trainers 4 of preset mnist; give --max-trainers 5 too"},
		{[]string{"local", "--trainers", "3", "--max-trainers", "2", "--out", fresh}, "--trainers 3 is more than --max-trainers 2"},
		{[]string{"local", "--global-batch", "3", "--out", fresh},
			"--global-batch 3: fewer images than max_trainers 4 of preset mnist (a rank would get no samples); give --max-trainers 3 or fewer too"},
		{[]string{"local", "--min-trainers", "3", "--max-trainers", "2", "--out", fresh}, "--min-trainers 3 is more than --max-trainers 2"},
		{[]string{"local", "--config", cfg, "--max-trainers", "64", "--trainers", "2", "--out", fresh},
			"--max-trainers 64: more than global_batch 32 of config " + cfg + " (a rank would get no samples)"},
		{[]string{"trainer", "--standalone", "--data-dir", fresh, "--preset", "mnist", "--global-batch", "2"},
			"--global-batch 2: fewer images than max_trainers 4 of preset mnist (a rank would get no samples); give --max-trainers 2 or fewer too"},
		{[]string{"trainer", "--standalone", "--data-dir", fresh, "--preset", "mnist", "--min-trainers", "6"},
			"--min-trainers 6: more than max_trainers 4 of preset mnist; give --max-trainers 6 or more too"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	mustNotExist(t, fresh)
}

// TestLocalDataPathNamesPreset: ddpm local --data PATH alone takes the preset from what the
// dataset holds (a folder prepared from MNIST: mnist), with PATH as the run's dataset; data of
// no one preset asks for --preset in one line.
func TestLocalDataPathNamesPreset(t *testing.T) {
	src, err := dataset.Open("mnist:test", dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prep := filepath.Join(t.TempDir(), "prep")
	if _, err := dataset.Prepare(src, prep, 0); err != nil {
		t.Fatal(err)
	}
	// The trainers refuse a folder of the test split; 10000 images labelled as the train split
	// stand in for the 60000 of ddpm dataset prepare mnist. The preset is checked through the
	// run's config hash, which the refusal of an --out holding another run names.
	ib, err := os.ReadFile(filepath.Join(prep, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	ib = []byte(strings.NewReplacer(`"mnist/test"`, `"mnist/train"`, `"split": "test"`, `"split": "train"`).Replace(string(ib)))
	if err := os.WriteFile(filepath.Join(prep, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	want.Dataset, want.MinTrainers = prep, 2
	out := t.TempDir()
	man, err := localrun.NewManifest(strings.Repeat("0", 64), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := localrun.WriteManifest(out, man); err != nil {
		t.Fatal(err)
	}
	args := []string{"local", "--data", prep, "--out", out}
	_, err = runCLI(t, context.Background(), nil, args...)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("this run %.12s", want.Hash())) {
		t.Errorf("ddpm %s: %v, want the run of preset mnist on %s (config %.12s)", strings.Join(args, " "), err, prep, want.Hash())
	}

	imgs := t.TempDir()
	if err := os.WriteFile(filepath.Join(imgs, "a.png"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	args = []string{"local", "--data", imgs, "--out", filepath.Join(t.TempDir(), "r")}
	_, err = runCLI(t, context.Background(), nil, args...)
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.HasPrefix(err.Error(), "--data "+imgs+" ") {
		t.Errorf("ddpm %s: %v, want one line naming --data", strings.Join(args, " "), err)
	}
}
