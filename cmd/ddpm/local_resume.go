package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// resumeLine is the line `ddpm local --resume RUN` prints before it starts any process: the
// step the run continues from, read (read-only, before the trainers hold their volumes) from
// the trainer volume with the newest committed checkpoint (trainer.CheckpointFileIn's choice):
//
//	ddpm local: resuming runs/a from committed checkpoint at step 400 (trainer-1)
//	ddpm local: resuming runs/a from step 0: no committed checkpoint yet
//
// A volume that cannot be read is named with the reason; the trainers report it too.
func resumeLine(out string) string {
	file, err := trainer.CheckpointFileIn(out)
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	name := filepath.Base(filepath.Dir(file))
	if _, err := os.Stat(file); err != nil {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s: cannot read %s's checkpoints: %v", out, name, err)
	}
	defer st.Close()
	steps, err := st.Committed()
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s: cannot read %s's checkpoints: %v", out, name, err)
	}
	if len(steps) == 0 {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	return fmt.Sprintf("ddpm local: resuming %s from committed checkpoint at step %d (%s)", out, slices.Max(steps), name)
}

// checkResumeDataset refuses, before any process starts, to resume the run in out whose run.yaml
// names a dataset path that does not exist from the working directory: its trainers would only
// exit at start-up ("dataset not found") after the coordinators had started. Versions before
// 2803c5d recorded a dataset given relative to the working directory as typed, and the trainers
// open it relative to theirs, which is this process's; run.yaml cannot be changed (its hash is
// the run's identity, held by the coordinators), so the line names the directory to resume
// from: the nearest folder above the run in which the path exists, e.g.
//
//	runs/a/run.yaml names its dataset grey, relative to the directory the run was started
//	in, and there is no grey in CWD: resume from START (cd START && ddpm local --resume runs/a)
//
// where CWD is this process's working directory and START the folder that holds grey.
//
// A dataset of an absolute path that is gone, or a relative one found nowhere above the run, is
// one line too. The built-in mnist and fashion-mnist are not paths.
func checkResumeDataset(out string, run config.Run) error {
	path := specPath(run.Dataset)
	if builtinDataset(path) {
		return nil
	}
	if _, err := os.Stat(path); err == nil || !errors.Is(err, os.ErrNotExist) {
		return nil // there, or unreadable for another reason the trainers name
	}
	yaml := filepath.Join(out, localrun.ConfigFile)
	if filepath.IsAbs(path) {
		return fmt.Errorf("%s names its dataset %s, which does not exist: put the data back there to resume the run", yaml, path)
	}
	cwd, err := os.Getwd()
	if err != nil {
		cwd = "."
	}
	line := fmt.Sprintf("%s names its dataset %s, relative to the directory the run was started in, and there is no %s in %s", yaml, path, path, cwd)
	absOut, err := filepath.Abs(out)
	if err != nil {
		return errors.New(line + ": resume from the directory the run was started in")
	}
	for dir := filepath.Dir(absOut); ; dir = filepath.Dir(dir) {
		cand := filepath.Join(dir, path)
		inRun := cand == absOut || strings.HasPrefix(cand, absOut+string(filepath.Separator))
		if _, err := os.Stat(cand); err == nil && !inRun {
			rel, err := filepath.Rel(dir, absOut)
			if err != nil {
				rel = absOut
			}
			return fmt.Errorf("%s: resume from %s (cd %s && ddpm local --resume %s)", line, dir, shellWord(dir), shellWord(rel))
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	return errors.New(line + ": resume from the directory the run was started in")
}

// shellWord is s as one word for a POSIX shell: as it is when it holds only characters no shell
// treats specially, else in single quotes (a single quote inside ends the quoting, is escaped
// with a backslash, and the quoting starts again).
func shellWord(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+:,@%=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
