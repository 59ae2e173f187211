package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// oldRunFolder writes the run folder dir of a 1-coordinator, 1-trainer ddpm local run of the
// cifar10 preset's small model on dataset as an older version left it: run.yaml with the path
// as typed and local.json with its hash (no processes, no checkpoints: the resume is refused
// before it reads them).
func oldRunFolder(t *testing.T, dir, dataset string) {
	t.Helper()
	run, err := config.Preset("cifar10")
	if err != nil {
		t.Fatal(err)
	}
	run.Model, run.Dataset, run.Steps, run.CheckpointEvery = "small", dataset, 40, 10
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, localrun.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	m := localrun.Manifest{ConfigHash: run.Hash(), Coordinators: 1, Trainers: 1,
		CoordinatorPorts: []localrun.CoordinatorPorts{{}}, TrainerPorts: []localrun.TrainerPorts{{}}}
	if err := localrun.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
}

// TestLocalResumeRelativeDataset: a run whose run.yaml names its dataset relative to the
// directory it was started in (every version before 2803c5d wrote the path as typed), resumed
// from another directory, is refused before any process starts, in one line naming the
// directory to resume from (the nearest folder above the run holding the path) or, where none
// does, saying to resume from where it started; an absolute dataset path that is gone is one
// line too. The coordinators used to start and the trainer to exit at start-up ("trainer-0
// failed at start-up (exit status 2): dataset "grey": dataset not found: grey: ...").
func TestLocalResumeRelativeDataset(t *testing.T) {
	root := t.TempDir()
	writeImages(t, filepath.Join(root, "projects", "grey"), 2, 32, true)
	run := filepath.Join(root, "projects", "runs", "a")
	oldRunFolder(t, run, "grey")
	lost := filepath.Join(root, "projects", "runs", "b")
	oldRunFolder(t, lost, "nowhere")
	gone := filepath.Join(root, "projects", "runs", "c")
	oldRunFolder(t, gone, filepath.Join(root, "gone"))
	spaced := filepath.Join(root, "my data")
	writeImages(t, filepath.Join(spaced, "grey"), 2, 32, true)
	spacedRun := filepath.Join(spaced, "run's 1")
	oldRunFolder(t, spacedRun, "grey")
	elsewhere := filepath.Join(root, "elsewhere")
	if err := os.MkdirAll(elsewhere, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(elsewhere)

	projects := filepath.Join(root, "projects")
	for _, tc := range []struct{ resume, want string }{
		{run, run + "/run.yaml names its dataset grey, relative to the directory the run was started in, and there is no grey in " +
			elsewhere + ": resume from " + projects + " (cd " + projects + " && ddpm local --resume runs/a)"},
		{"../projects/runs/a", "../projects/runs/a/run.yaml names its dataset grey, relative to the directory the run was started in, and there is no grey in " +
			elsewhere + ": resume from " + projects + " (cd " + projects + " && ddpm local --resume runs/a)"},
		{lost, lost + "/run.yaml names its dataset nowhere, relative to the directory the run was started in, and there is no nowhere in " +
			elsewhere + ": resume from the directory the run was started in"},
		// The command to copy quotes what a shell would split or take apart.
		{spacedRun, spacedRun + "/run.yaml names its dataset grey, relative to the directory the run was started in, and there is no grey in " +
			elsewhere + ": resume from " + spaced + " (cd '" + spaced + "' && ddpm local --resume 'run'\\''s 1')"},
		{gone, gone + "/run.yaml names its dataset " + filepath.Join(root, "gone") + ", which does not exist: put the data back there to resume the run"},
	} {
		args := []string{"local", "--resume", tc.resume, "--quiet"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, filepath.Join(run, "logs"))
		mustNotExist(t, filepath.Join(run, localrun.LockFile))
	}
}
