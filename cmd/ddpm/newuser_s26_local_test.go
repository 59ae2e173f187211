package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/localrun"
)

// TestNewUserS26ResumeManifestGoneNoCheckpoint: --resume of a run folder whose local.json is gone
// and whose trainer-0/checkpoints.db (a real, empty store) holds no committed checkpoint says so
// and gives the command that starts the run again, exit 2, nothing made; it advised exporting
// "its checkpoints", a command that then failed with "holds no checkpoint yet".
func TestNewUserS26ResumeManifestGoneNoCheckpoint(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	mnistRunFolder(t, run)
	db := filepath.Join(run, "trainer-0", "checkpoints.db")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Open(db, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(run, localrun.ManifestFile)); err != nil {
		t.Fatal(err)
	}
	args := []string{"local", "--resume", run, "--quiet"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--resume "+run+": its local.json is gone (the run's processes and ports), so the run cannot be resumed; "+
		"it holds no committed checkpoint yet, so nothing is lost by starting it again: ddpm local --config "+filepath.Join(run, "run.yaml")+
		" --out NEW (with the --init it began from, if any)")
	mustNotExist(t, filepath.Join(run, "logs"))
}

// TestNewUserS26ResumeRunConfigGone: --resume of a run folder whose run.yaml was removed, while
// trainer-0 keeps the run's config (trainer-0/run.yaml, of the hash local.json records), names
// that copy and the cp that puts it back, exit 2, nothing made; it said "RUN/run.yaml: cannot
// load run config: no such file", with no way back.
func TestNewUserS26ResumeRunConfigGone(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	r := mnistRunFolder(t, run)
	yaml := filepath.Join(run, "run.yaml")
	copyPath := filepath.Join(run, "trainer-0", "run.yaml")
	if err := os.WriteFile(copyPath, r.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(yaml); err != nil {
		t.Fatal(err)
	}
	args := []string{"local", "--resume", run, "--quiet"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, yaml+" is gone; a trainer keeps the run's config: put it back (cp "+copyPath+" "+yaml+") and resume again")
	mustNotExist(t, filepath.Join(run, "logs"))
	mustNotExist(t, yaml)
}

// TestNewUserS26UnstartedRunFolderReused: a ddpm local stopped in its first moments (Ctrl-C,
// SIGTERM or a kill between making --out and writing local.json) leaves local.lock, run.yaml and
// certs/ and no local.json. The same command again removes them, says so in one line and goes on
// (here to the refusal of its missing --init, the next check); it was refused for good ("--out
// RUN holds 3 files or folders and no ddpm local run") and --resume too ("no local.json").
// A folder without local.lock, or whose run.yaml is the --config given, is refused as before,
// its files kept.
func TestNewUserS26UnstartedRunFolderReused(t *testing.T) {
	dir := t.TempDir()
	leftover := func(name string, lock bool) string {
		run := filepath.Join(dir, name)
		for p, b := range map[string]string{"run.yaml": "preset: mnist\nsteps: 60\n", "certs/ca.crt": "x"} {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(run, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(run, p), []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if lock {
			if err := os.WriteFile(filepath.Join(run, "local.lock"), []byte("4242\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return run
	}
	missing := filepath.Join(dir, "gone.safetensors")

	run := leftover("a", true)
	// A command refused for another reason (its --init is missing) leaves the leftover as it is.
	var stderr strings.Builder
	args := []string{"local", "--data", "mnist", "--steps", "60", "--init", missing, "--out", run, "--quiet"}
	_, err := runCLI(t, context.Background(), &stderr, args...)
	wantExit(t, args, err, 2, "--init "+missing+" does not exist")
	if stderr.Len() != 0 {
		t.Errorf("stderr %q, want nothing (the refused command clears nothing)", stderr.String())
	}
	if ents, err := os.ReadDir(run); err != nil || len(ents) != 3 {
		t.Errorf("%s holds %v (%v) after a refused command, want its 3 leftovers", run, ents, err)
	}
	// A run that starts clears it first, in one line, and runs there.
	r := runLocalCmd(t, "--data", "mnist", "--steps", "2", "--checkpoint-every", "2", "--global-batch", "8", "--t", "50",
		"--coordinators", "1", "--trainers", "1", "--samples", "0", "--out", run, "--quiet")
	want := "ddpm local: " + run + " holds what a ddpm local stopped before its run began left (certs, run.yaml, local.lock, no local.json); starting the run there afresh"
	if r.code != 0 || !strings.HasPrefix(r.out, want+"\n") || !strings.HasPrefix(r.lastLine(), "ddpm local: done: "+run+"; ") {
		t.Errorf("ddpm local --out %s (a leftover): exit %d\n%s\nwant exit 0, first the line %q, last the done line", run, r.code, r.out, want)
	}

	noLock := leftover("b", false)
	args = []string{"local", "--data", "mnist", "--steps", "60", "--out", noLock, "--quiet"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--out "+noLock+" holds 2 files or folders and no ddpm local run; give a new or empty folder for the run")

	input := leftover("c", true)
	args = []string{"local", "--config", filepath.Join(input, "run.yaml"), "--out", input, "--quiet"}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--out "+input+" holds 3 files or folders and no ddpm local run; give a new or empty folder for the run")
	for _, p := range []string{filepath.Join(noLock, "run.yaml"), filepath.Join(input, "run.yaml"), filepath.Join(input, "certs", "ca.crt")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
}

// TestNewUserS26ResumeInitSameFile: --resume with the run's own --init weights named by a
// relative path passes the check (it was refused, exit 2, "--init w.safetensors: the run in RUN
// started from \"/abs/w.safetensors\"": local.json records the absolute path, compared as a
// string); here it goes on to the next check, the weights being gone. --init of a run begun
// without weights says so and what to do, exit 2 (it was `started from ""`).
func TestNewUserS26ResumeInitSameFile(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	r := mnistRunFolder(t, run)
	w := filepath.Join(dir, "w.safetensors") // absent: the next check names it
	m := localrun.Manifest{ConfigHash: r.Hash(), Coordinators: 1, Trainers: 1, Init: w,
		CoordinatorPorts: []localrun.CoordinatorPorts{{}}, TrainerPorts: []localrun.TrainerPorts{{}}}
	if err := localrun.WriteManifest(run, m); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	args := []string{"local", "--resume", run, "--init", "w.safetensors", "--quiet"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, run+" started from --init "+w+", which does not exist, and holds no committed checkpoint yet: put the weights back there to resume the run (it starts at step 0 from them)")

	m.Init = ""
	if err := localrun.WriteManifest(run, m); err != nil {
		t.Fatal(err)
	}
	_, err = runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "--init w.safetensors cannot change on --resume: the run in "+run+" started from no --init weights (its seed's initialization); drop --init")
	mustNotExist(t, filepath.Join(run, "logs"))
}
