package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// mnistRunFolder writes the run folder dir of a stopped 1-coordinator, 1-trainer ddpm local run
// of the mnist preset (run.yaml, local.json with its hash, trainer-0/checkpoints.db as an empty
// file: the commands below refuse before they open it) and returns its run config.
func mnistRunFolder(t *testing.T, dir string) config.Run {
	t.Helper()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps = 60
	if err := os.MkdirAll(filepath.Join(dir, "trainer-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, localrun.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trainer-0", "checkpoints.db"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := localrun.Manifest{ConfigHash: run.Hash(), Coordinators: 1, Trainers: 1,
		CoordinatorPorts: []localrun.CoordinatorPorts{{}}, TrainerPorts: []localrun.TrainerPorts{{}}}
	if err := localrun.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return run
}

// TestNewUserResumeData: --resume with a --data of other data is refused in one line, exit 2,
// before any process starts (it was ignored: the run went on training on mnist, while the
// command line said fashion-mnist); the run's own data, as a preset name, passes this check.
func TestNewUserResumeData(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	mnistRunFolder(t, run)
	args := []string{"local", "--resume", run, "--data", "fashion-mnist", "--quiet"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--data fashion-mnist cannot change on --resume: "+run+" trains on mnist (its run.yaml); drop --data")
	mustNotExist(t, filepath.Join(run, "logs"))
	mustNotExist(t, filepath.Join(run, localrun.LockFile))

	if !sameRunData("mnist", config.Run{Preset: "mnist", Dataset: "mnist"}) || sameRunData("fashion-mnist", config.Run{Preset: "mnist", Dataset: "mnist"}) {
		t.Error("sameRunData: mnist is the mnist run's data, fashion-mnist is not")
	}
	dir := t.TempDir()
	t.Chdir(dir)
	if !sameRunData("imgs", config.Run{Preset: "mnist", Dataset: filepath.Join(dir, "imgs")}) {
		t.Error("sameRunData: imgs, relative, is the run's absolute dataset path")
	}
}

// TestNewUserResumeWrongFolder: --resume given a part of a run (its checkpoint file, its
// trainer folder, its run.yaml), a file of another kind or a missing path says what it is in one
// line, exit 2, and for a part of a run names the run folder to give (was "open
// RUN/trainer-0/checkpoints.db/local.json: not a directory" for the checkpoint file).
func TestNewUserResumeWrongFolder(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	mnistRunFolder(t, run)
	png := filepath.Join(root, "pic.png")
	if err := os.WriteFile(png, []byte("\x89PNG\r\n\x1a\n0000000000"), 0o644); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(run, "trainer-0", "checkpoints.db")
	for _, tc := range []struct{ resume, want string }{
		{db, "--resume " + db + " is a file of the ddpm local run " + run + "; give --resume " + run},
		{filepath.Join(run, "trainer-0"), "--resume " + filepath.Join(run, "trainer-0") + " is a folder of the ddpm local run " + run + "; give --resume " + run},
		{filepath.Join(run, "run.yaml"), "--resume " + filepath.Join(run, "run.yaml") + " is a file of the ddpm local run " + run + "; give --resume " + run},
		{png, "--resume " + png + " is an image (PNG, JPEG or WebP), not a ddpm local run folder (the --out of a ddpm local run)"},
		{filepath.Join(root, "nope"), "--resume " + filepath.Join(root, "nope") + " does not exist (it takes the folder of a ddpm local run, its --out)"},
	} {
		args := []string{"local", "--resume", tc.resume, "--quiet"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
	}
	mustNotExist(t, filepath.Join(run, "logs"))
}

// TestNewUserOutFolder: a new run's --out that is a file, a folder in another run's folder, or a
// folder of the user's own files is refused in one line, exit 2, and nothing is written there
// (a file was "open F: not a directory"; a folder of images "is not empty and holds a different
// run (no local.json)", a run it does not hold; a trainer folder of a run was said to hold a
// different run, and a new folder inside a run's trainer folder was made and trained into).
// Through the binary, as a user runs it.
func TestNewUserOutFolder(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	mnistRunFolder(t, run)
	file := filepath.Join(root, "notes.txt")
	if err := os.WriteFile(file, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imgs := filepath.Join(root, "imgs")
	writeImages(t, imgs, 3, 32, true)
	inTrainer := filepath.Join(run, "trainer-0", "new")
	for _, tc := range []struct{ out, want string }{
		{file, "--out " + file + " is a file, not a folder: give a new folder for the run"},
		{filepath.Join(run, "trainer-0"), "--out " + filepath.Join(run, "trainer-0") + " is in the folder of the ddpm local run " + run + "; give a new folder outside it (or --resume " + run + ")"},
		{inTrainer, "--out " + inTrainer + " is in the folder of the ddpm local run " + run + "; give a new folder outside it (or --resume " + run + ")"},
		{imgs, "--out " + imgs + " holds 3 files or folders and no ddpm local run; give a new or empty folder for the run"},
	} {
		// The real binary: a version that takes --out starts real processes, which must not be
		// this test binary.
		r := runLocalCmd(t, "--steps", "50", "--trainers", "1", "--coordinators", "1", "--samples", "0", "--out", tc.out, "--quiet")
		if r.code != 2 || r.out != "ddpm: "+tc.want+"\n" {
			t.Errorf("ddpm local --out %s: exit %d\n%s\nwant exit 2 %q", tc.out, r.code, r.out, tc.want)
		}
	}
	mustNotExist(t, inTrainer)
	mustNotExist(t, filepath.Join(imgs, localrun.ConfigFile))
	if b, err := os.ReadFile(file); err != nil || string(b) != "mine\n" {
		t.Errorf("%s: %q, %v", file, b, err)
	}
}

// TestNewUserInitFolder: --init given a run folder or a trainer folder (where the weights are,
// but not as safetensors) says so with the export command that writes them, exit 2; another
// folder and a missing file are one plain line (were "is not weights of model "tiny": unet:
// reading R: safetensors: read R: is a directory" and "--init: stat F: no such file or
// directory").
func TestNewUserInitFolder(t *testing.T) {
	root := t.TempDir()
	run := filepath.Join(root, "run")
	mnistRunFolder(t, run)
	other := filepath.Join(root, "weights")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	tr := filepath.Join(run, "trainer-0")
	missing := filepath.Join(root, "w.safetensors")
	for _, tc := range []struct{ init, want string }{
		{run, "--init " + run + " is a ddpm local run folder, not safetensors weights; write its weights with: ddpm checkpoint export " + run + " --ema --out W.safetensors"},
		{tr, "--init " + tr + " is a trainer's folder (checkpoints.db), not safetensors weights; write its weights with: ddpm checkpoint export " + tr + " --ema --out W.safetensors"},
		{other, "--init " + other + " is a folder, not safetensors weights (a .safetensors file, as ddpm checkpoint export writes)"},
		{missing, "--init " + missing + " does not exist"},
	} {
		out := filepath.Join(root, "new")
		args := []string{"local", "--steps", "50", "--init", tc.init, "--out", out, "--quiet"}
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
		mustNotExist(t, out)
	}
}

// TestNewUserResumeInitGone: a run started from --init weights that have since been moved is
// refused at --resume before any process starts, in one line naming the file, exit 2 (its
// trainers read it at start-up even from a committed checkpoint: the coordinators started, then
// the run stopped with "trainer-0 failed at start-up (exit status 2): trainer: --init W: unet:
// reading W: safetensors: open W: no such file or directory"). Through the real binary, on a
// run folder as ddpm local leaves it (certificates too).
func TestNewUserResumeInitGone(t *testing.T) {
	run := makeLocalRun(t, 1, nil)
	m, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	w := filepath.Join(filepath.Dir(run), "w.safetensors")
	m.Init = w
	if err := localrun.WriteManifest(run, m); err != nil {
		t.Fatal(err)
	}
	r := runLocalCmd(t, "--resume", run, "--quiet")
	want := "ddpm: " + run + " started from --init " + w + ", which does not exist, and holds no committed checkpoint yet: put the weights back there to resume the run (it starts at step 0 from them)\n"
	if r.code != 2 || r.out != want {
		t.Errorf("ddpm local --resume %s: exit %d\n%s\nwant exit 2 %q", run, r.code, r.out, want)
	}
	mustNotExist(t, filepath.Join(run, "logs"))
}

// TestNewUserResumeEditedConfig: --resume of a run whose run.yaml was edited (steps raised, to
// train on) says what happened and both ways: the command that puts the original back (a
// trainer's copy that hashes to the recorded config) and the way to train on with other
// settings; exit 2, nothing started. It was "RUN: run.yaml (config X) does not match local.json
// (Y)".
func TestNewUserResumeEditedConfig(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	orig := mnistRunFolder(t, run)
	copyPath := filepath.Join(run, "trainer-0", "run.yaml")
	if err := os.WriteFile(copyPath, orig.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	edited := orig
	edited.Steps = 120
	yaml := filepath.Join(run, localrun.ConfigFile)
	if err := os.WriteFile(yaml, edited.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	w := run + "-weights.safetensors"
	want := yaml + " was changed since the run started (config " + edited.Hash()[:12] + ", the run's " + orig.Hash()[:12] +
		"), and a run's config cannot change: put it back (cp " + copyPath + " " + yaml + "); to train on with other settings, such as more steps: ddpm checkpoint export " +
		run + " --out " + w + ", then a new ddpm local --init " + w + " --out NEW"
	args := []string{"local", "--resume", run, "--quiet"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, want)
	mustNotExist(t, filepath.Join(run, "logs"))
}

// TestNewUserResumeManifestGone: --resume of a run folder whose local.json is gone (its
// checkpoints are there) says that and how to train on from them, exit 2; it said "RUN holds no
// ddpm local run (no local.json)", of a folder that holds one.
func TestNewUserResumeManifestGone(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	mnistRunFolder(t, run)
	if err := os.Remove(filepath.Join(run, localrun.ManifestFile)); err != nil {
		t.Fatal(err)
	}
	w := run + "-weights.safetensors"
	args := []string{"local", "--resume", run, "--quiet"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--resume "+run+": its local.json is gone (the run's processes and ports), so the run cannot be resumed; its checkpoints are there: ddpm checkpoint export "+
		run+" --out "+w+", then a new ddpm local --init "+w+" --out NEW")
	mustNotExist(t, filepath.Join(run, "logs"))
}

// TestNewUserPreparedTestSplit: ddpm local on a folder ddpm dataset prepare made from a test
// split (mnist:test) is refused in one line naming the split and the data to give, exit 2,
// nothing made; it said `dataset "D": unsupported option: D: holds the test split, train asked`.
func TestNewUserPreparedTestSplit(t *testing.T) {
	root := t.TempDir()
	prep := filepath.Join(root, "mt")
	if _, err := runCLI(t, context.Background(), nil, "dataset", "prepare", "mnist:test", "--out", prep); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "run")
	abs, err := filepath.Abs(prep)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"local", "--data", prep, "--steps", "50", "--out", out, "--quiet"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "dataset "+abs+" holds the test split (mnist/test); a run trains on the train split: give --data mnist (or a folder ddpm dataset prepare mnist made)")
	mustNotExist(t, out)
}
