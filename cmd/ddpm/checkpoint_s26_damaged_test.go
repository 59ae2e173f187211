package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// s26RunFolder is a ddpm local run folder (local.json, run.yaml) of two trainers whose files
// hold real checkpoints of the mnist preset's tiny U-Net, all committed: trainer-0's step 0,
// trainer-1's steps 0 and 1 (it got further). It returns the folder and the two files.
func s26RunFolder(t *testing.T) (dir string, files [2]string) {
	t.Helper()
	dir, files[0] = evalFixture(t) // run.yaml, trainer-0/checkpoints.db with step 0
	m := localrun.Manifest{ConfigHash: fixtureRun.Hash(), Coordinators: 1, Trainers: 2,
		CoordinatorPorts: []localrun.CoordinatorPorts{{Raft: 40001, GRPC: 40002, HTTP: 40003}},
		TrainerPorts:     []localrun.TrainerPorts{{Listen: 40021, HTTP: 40022}, {Listen: 40031, HTTP: 40032}}}
	if err := localrun.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	s26Commit(t, files[0], 0)
	if err := os.Mkdir(localrun.TrainerDir(dir, 1), 0o755); err != nil {
		t.Fatal(err)
	}
	files[1] = filepath.Join(localrun.TrainerDir(dir, 1), trainer.CheckpointFile)
	s26Commit(t, files[1], 0, 1)
	return dir, files
}

// s26Commit saves the fixture's checkpoint as each of steps into the store at file (made if
// need be) and marks each committed.
func s26Commit(t *testing.T, file string, steps ...int64) {
	t.Helper()
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, s := range steps {
		c := *fixtureCkpt
		c.Step = s
		if _, err := st.Save(&c); err != nil && !errors.Is(err, checkpoint.ErrConflict) {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(s); err != nil {
			t.Fatal(err)
		}
	}
}

// s26Run runs the ddpm binary with args and returns its stdout, stderr and exit status.
func s26Run(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil && !errors.As(err, new(*exec.ExitError)) {
		t.Fatal(err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// TestCheckpointS26RunDamagedTrainerNamed: checkpoint list and verify of a ddpm local run folder
// whose trainer-0 file is damaged read trainer-1's and say so in one line on stderr naming the
// file read and the damaged one: list's a warning, status 0 (its rows are whole), verify's its
// error line, status 1 (the run folder holds damage) after trainer-1's steps verified. A file a
// trainer moved aside (checkpoints.db.damaged-UTCTIME) beside trainer-1's is neither read nor
// named. With trainer-1's file held by a live writer: the in-use line (status 2), the damage of
// trainer-0's added to it. With every trainer's file damaged: one line naming them, status 1.
// They read trainer-1's in silence (verify exited 0), and otherwise named trainer-0's alone.
func TestCheckpointS26RunDamagedTrainerNamed(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir, files := s26RunFolder(t)
	damageMetaS25(t, files[0])
	aside := files[1] + ".damaged-20261201T022500Z"
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aside, b, 0o644); err != nil {
		t.Fatal(err)
	}
	const cannot = " is damaged (it cannot be opened as a checkpoint file)"

	out, errText, code := s26Run(t, bin, "checkpoint", "list", dir)
	want := "ddpm checkpoint list: warning: " + files[0] + cannot + "; this read " + files[1] +
		", the newest committed checkpoint of the run's other trainers (ddpm checkpoint verify " + files[0] + " names the damage)\n"
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || errText != want || len(rows) != 3 || !strings.HasPrefix(rows[1], "0 ") || !strings.HasPrefix(rows[2], "1 ") {
		t.Errorf("checkpoint list RUN: status %d, stderr %q, stdout\n%s\nwant status 0, stderr %q, a header and the rows of trainer-1's steps 0 and 1", code, errText, out, want)
	}

	out, errText, code = s26Run(t, bin, "checkpoint", "verify", dir)
	want = "ddpm: " + dir + ": 2 checkpoints verified in " + files[1] + ", the newest committed checkpoint of the run's other trainers, but " +
		files[0] + cannot + ": ddpm checkpoint verify " + files[0] + " names the damage\n"
	rows = strings.Split(strings.TrimSpace(out), "\n")
	if code != exitBadData || errText != want || len(rows) != 2 || !strings.HasPrefix(rows[0], "step 0: ok, state ") || !strings.HasPrefix(rows[1], "step 1: ok, state ") {
		t.Errorf("checkpoint verify RUN: status %d, stderr %q, stdout\n%s\nwant status %d, stderr %q, steps 0 and 1 ok", code, errText, out, exitBadData, want)
	}

	// trainer-1's file held by a writer (this process), as a live trainer holds it.
	live, err := checkpoint.Open(files[1], checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(dir, localrun.CertsDir)
	want = fmt.Sprintf("ddpm: checkpoint: %s in use by process %d (trainer-1 of the ddpm local run %s: copy a committed checkpoint out of it with: "+
		"ddpm checkpoint fetch 127.0.0.1:40031 --certs %s --step N --out %s, N a committed step that ddpm status %s lists); %s is damaged too (it cannot be opened as a checkpoint file)\n",
		files[1], os.Getpid(), dir, certs, filepath.Join(dir, "step-N.db"), dir, files[0])
	for _, command := range []string{"list", "verify"} {
		out, errText, code := s26Run(t, bin, "checkpoint", command, dir)
		if code != exitUsage || errText != want || out != "" {
			t.Errorf("checkpoint %s RUN, trainer-1's file in use: status %d, stdout %q, stderr %q;\nwant status %d, no stdout, stderr %q", command, code, out, errText, exitUsage, want)
		}
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}

	damageMetaS25(t, files[1])
	want = "ddpm: checkpoint " + dir + ": every trainer's checkpoint file is damaged (" + files[0] + ", " + files[1] +
		" cannot be opened as checkpoint files; ddpm checkpoint verify FILE names the damage of one)\n"
	for _, command := range []string{"list", "verify"} {
		out, errText, code := s26Run(t, bin, "checkpoint", command, dir)
		if code != exitBadData || errText != want || out != "" {
			t.Errorf("checkpoint %s RUN, both files damaged: status %d, stdout %q, stderr %q;\nwant status %d, no stdout, stderr %q", command, code, out, errText, exitBadData, want)
		}
	}
}

// TestCheckpointS26MovedAsideNotRead: a trainer-0 that moved its damaged file aside
// (checkpoints.db.damaged-UTCTIME) and started a fresh one: list and verify of the run folder
// read the fresh file (trainer-0's, as far as trainer-1's) without a warning, and one whose
// fresh file is not there yet reads trainer-1's, also without one: nothing is damaged. The old
// code passed this too (it never looked at such files); it guards the new look at every
// trainer's file (localrun.TrainerCheckpointFiles), which must not take a moved file for one.
func TestCheckpointS26MovedAsideNotRead(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir, files := s26RunFolder(t)
	damageMetaS25(t, files[0])
	aside := files[0] + ".damaged-20261201T022500Z"
	if err := os.Rename(files[0], aside); err != nil {
		t.Fatal(err)
	}
	s26Commit(t, files[0], 0, 1) // the fresh file, its steps fetched from trainer-1
	for _, command := range []string{"list", "verify"} {
		out, errText, code := s26Run(t, bin, "checkpoint", command, dir)
		if code != 0 || errText != "" {
			t.Errorf("checkpoint %s RUN, trainer-0's damaged file moved aside: status %d, stderr %q; want 0, none\nstdout:\n%s", command, code, errText, out)
		}
	}
	out, _, _ := s26Run(t, bin, "checkpoint", "verify", dir)
	if !strings.HasSuffix(out, dir+": 2 checkpoints verified\n") {
		t.Errorf("checkpoint verify RUN: stdout %q, want it to end %q", out, dir+": 2 checkpoints verified")
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	out, errText, code := s26Run(t, bin, "checkpoint", "verify", dir)
	if code != 0 || errText != "" || !strings.HasSuffix(out, dir+": 2 checkpoints verified\n") {
		t.Errorf("checkpoint verify RUN, trainer-0 holding only the moved file: status %d, stderr %q, stdout %q; want 0, none, %q", code, errText, out, dir+": 2 checkpoints verified")
	}
}

// TestCheckpointS26DirectoryNotDamaged: a directory named checkpoints.db (a trainer refuses one
// too) is said to be a directory, not a checkpoint file, status 2, by list and verify of it, of
// its trainer's folder and of the run folder, where it is not counted among the damaged files;
// trainer-1's damaged file is added to the line. They called it a damaged checkpoint file
// (bbolt's "invalid database"), status 1, and a user would have restored a file that is a folder.
func TestCheckpointS26DirectoryNotDamaged(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir, files := s26RunFolder(t)
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(files[0], 0o755); err != nil {
		t.Fatal(err)
	}
	damageMetaS25(t, files[1])
	line := "ddpm: checkpoint: " + files[0] + " is a directory, not a checkpoint file (a trainer keeps its checkpoints in a file of that name: move the folder out of the way)"
	for _, tc := range []struct{ path, want string }{
		{files[0], line + "\n"},
		{filepath.Dir(files[0]), line + "\n"},
		{dir, line + "; " + files[1] + " is damaged too (it cannot be opened as a checkpoint file)\n"},
	} {
		for _, command := range []string{"list", "verify"} {
			out, errText, code := s26Run(t, bin, "checkpoint", command, tc.path)
			if code != exitUsage || errText != tc.want || out != "" {
				t.Errorf("checkpoint %s %s: status %d, stdout %q, stderr %q;\nwant status %d, no stdout, stderr %q", command, tc.path, code, out, errText, exitUsage, tc.want)
			}
		}
	}
}

// TestCheckpointS26SampleEvalExportNameDamaged: sample, eval bpd and checkpoint export of a run
// folder whose trainer-0 file is damaged read trainer-1's, as list does, and say so in the
// same one warning line on stderr (which file was read, which is damaged, how to see the
// damage), then do their work (exit 0). They read trainer-1's file without a word.
func TestCheckpointS26SampleEvalExportNameDamaged(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	dir, files := s26RunFolder(t)
	damageMetaS25(t, files[0])
	out := t.TempDir()
	for _, tc := range []struct {
		command string
		args    []string
	}{
		{"sample", []string{"sample", "--checkpoint", dir, "--n", "1", "--out", filepath.Join(out, "s.png")}},
		{"eval bpd", []string{"eval", "bpd", "--checkpoint", dir, "--n", "1", "--batch", "1"}},
		{"checkpoint export", []string{"checkpoint", "export", dir, "--out", filepath.Join(out, "w.safetensors")}},
	} {
		_, stderr, code := s26Run(t, bin, tc.args...)
		want := "ddpm " + tc.command + ": warning: " + files[0] + " is damaged (it cannot be opened as a checkpoint file); this read " + files[1] +
			", the newest committed checkpoint of the run's other trainers (ddpm checkpoint verify " + files[0] + " names the damage)\n"
		if code != 0 || !strings.Contains(stderr, want) || strings.Count(stderr, "is damaged") != 1 {
			t.Errorf("ddpm %v: exit %d, stderr:\n%s\nwant exit 0 and the one warning line %q", tc.args, code, stderr, want)
		}
	}
}
