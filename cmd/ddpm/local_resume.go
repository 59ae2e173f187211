package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/viz"
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
	step, name, err := newestCommittedIn(out)
	switch {
	case err != nil:
		return fmt.Sprintf("ddpm local: resuming %s: cannot read %s's checkpoints: %v", out, name, err)
	case step < 0:
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	return fmt.Sprintf("ddpm local: resuming %s from committed checkpoint at step %d (%s)", out, step, name)
}

// newestCommittedIn is the newest committed checkpoint's step of the ddpm local run in out and
// the trainer (trainer-I) whose volume holds it, read-only from the volume
// trainer.CheckpointFileIn picks; step -1 when there is none (no volume, or none committed).
// err: that volume cannot be read.
func newestCommittedIn(out string) (step int64, name string, err error) {
	file, err := trainer.CheckpointFileIn(out)
	if err != nil {
		return -1, "", nil
	}
	name = filepath.Base(filepath.Dir(file))
	if _, err := os.Stat(file); err != nil {
		return -1, name, nil
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return -1, name, err
	}
	defer st.Close()
	steps, err := st.Committed()
	if err != nil {
		return -1, name, err
	}
	if len(steps) == 0 {
		return -1, name, nil
	}
	return slices.Max(steps), name, nil
}

// finishedLoss is the final loss the run folder out records in loss.csv, as `ddpm local: done`
// words it: the loss of the last step that was not skipped ("0.01530", with " at step K" when K
// is not the run's last step, steps); "" when loss.csv is missing, unreadable or empty.
func finishedLoss(out string, steps int64) string {
	pts, err := viz.ReadLossCSV(filepath.Join(out, localrun.LossCSV))
	if err != nil {
		return ""
	}
	pts = plotted(pts)
	if len(pts) == 0 {
		return ""
	}
	last := slices.MaxFunc(pts, func(a, b viz.LossPoint) int { return cmp.Compare(a.Step, b.Step) })
	if last.Step == steps {
		return fmt.Sprintf("%.5f", last.Loss)
	}
	return fmt.Sprintf("%.5f at step %d", last.Loss, last.Step)
}

// finishedLines are the two lines of `ddpm local --resume RUN` for a run that finished (its
// samples.png, when it makes one, and loss.png there): where its results are, and the commands
// that go further (other samples of another seed; a new run from its exported weights), e.g.
//
//	ddpm local: runs/a finished at step 200 (final loss 0.01530): samples in runs/a/samples.png, loss curve in runs/a/loss.png
//	ddpm local: nothing to resume; other samples: ddpm sample --checkpoint runs/a --seed 1 --out FILE.png; to train on (more steps, other settings): ddpm checkpoint export runs/a --out runs/a-weights.safetensors, then ddpm local --init runs/a-weights.safetensors --out NEW
//
// n is the number of samples the run draws (0: none), seed the run's.
func finishedLines(out string, steps int64, loss string, n int, seed uint64) string {
	first := fmt.Sprintf("ddpm local: %s finished at step %d", out, steps)
	if loss != "" {
		first += " (final loss " + loss + ")"
	}
	var have []string
	if p := filepath.Join(out, localrun.SamplesPNG); pathExists(p) {
		have = append(have, "samples in "+p)
	}
	if p := filepath.Join(out, localrun.LossPNG); pathExists(p) {
		have = append(have, "loss curve in "+p)
	}
	if len(have) > 0 {
		first += ": " + strings.Join(have, ", ")
	}
	sample := "ddpm sample --checkpoint " + shellWord(out)
	if n > 0 && n != 64 {
		sample += fmt.Sprintf(" --n %d", n)
	}
	sample += fmt.Sprintf(" --seed %d --out FILE.png", seed+1)
	w := shellWord(filepath.Clean(out) + "-weights.safetensors")
	return first + "\n" + fmt.Sprintf("ddpm local: nothing to resume; other samples: %s; to train on (more steps, other settings): ddpm checkpoint export %s --out %s, then ddpm local --init %s --out NEW",
		sample, shellWord(out), w, w)
}

// pathExists reports whether p can be stat()ed.
func pathExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// resumeFinished is `ddpm local --resume RUN` of a run that finished training (runFolderFinished,
// the rule ddpm status RUN and ddpm loss RUN use: a trainer volume holds the committed checkpoint
// of the run's last step, which the coordinators commit only when every rank reported it; a
// succeeded run is never rolled back):
// no process starts. With its results there it prints finishedLines and changes nothing. When
// the end of the run was cut short (Ctrl-C during the final sampling, a killed supervisor), it
// makes what is missing the way the run's end makes it, from the final committed checkpoint
// alone: loss.png from loss.csv, and samples.png (n samples of the EMA weights, the run's seed:
// the grid the run would have drawn) when n > 0. Ctrl-C while sampling leaves at once (exit
// 130) with the ddpm sample command that draws it.
func resumeFinished(ctx context.Context, w io.Writer, out string, run config.Run, n int) error {
	loss := finishedLoss(out, run.Steps)
	samplesPath := filepath.Join(out, localrun.SamplesPNG)
	drawSamples := n > 0 && !pathExists(samplesPath)
	pts, _ := viz.ReadLossCSV(filepath.Join(out, localrun.LossCSV))
	drawLoss := !pathExists(filepath.Join(out, localrun.LossPNG)) && len(plotted(pts)) > 0
	if !drawSamples && !drawLoss {
		fmt.Fprintln(w, finishedLines(out, run.Steps, loss, n, run.Seed))
		return nil
	}
	lock, err := localrun.Lock(out)
	if err != nil {
		return withExit(1, err)
	}
	defer lock.Release()
	// The volume sampling reads: the newest committed checkpoint's, as at the end of a run.
	_, holder, err := newestCommittedIn(out)
	if err != nil {
		return fmt.Errorf("samples: %s: %w", holder, err)
	}
	var missing []string
	if drawLoss {
		missing = append(missing, localrun.LossPNG)
	}
	if drawSamples {
		missing = append(missing, localrun.SamplesPNG)
	}
	fmt.Fprintf(w, "ddpm local: %s finished training at step %d (%s holds the final checkpoint); writing its missing %s, no cluster needed\n",
		out, run.Steps, holder, strings.Join(missing, " and "))
	if drawLoss {
		slices.SortFunc(pts, func(a, b viz.LossPoint) int { return cmp.Compare(a.Step, b.Step) })
		title := fmt.Sprintf("%s: L_simple, global batch %d", filepath.Base(out), run.GlobalBatch)
		if err := viz.WriteLossPNG(filepath.Join(out, localrun.LossPNG), plotted(pts), title); err != nil {
			return fmt.Errorf("loss files: %w", err)
		}
		fmt.Fprintf(w, "ddpm local: wrote %s\n", filepath.Join(out, localrun.LossPNG))
	}
	if drawSamples {
		if msg := localSamplesWarning(n, run.T, run.Model); msg != "" {
			fmt.Fprintln(w, msg)
		}
		ckpt := filepath.Join(out, holder, trainer.CheckpointFile)
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer stop()
		t0 := time.Now()
		sampled := make(chan error, 1)
		go func() { sampled <- sampleGrid(ckpt, -1, n, run.Seed, samplesPath, "", w) }()
		select {
		case err := <-sampled:
			if err != nil {
				return fmt.Errorf("samples: %w", err)
			}
		case <-ctx.Done():
			return withExit(exitInterrupted, errors.New(interruptedSamplingLine(out, samplesPath, n, run.Seed)))
		}
		fmt.Fprintf(w, "ddpm local: wrote %s (%s of the EMA weights in %.0fs)\n", samplesPath, countNoun(n, "sample", "samples"), time.Since(t0).Seconds())
	}
	if loss == "" {
		loss = "n/a"
	} else if !strings.Contains(loss, " at step ") {
		loss += fmt.Sprintf(" at step %d", run.Steps)
	}
	fmt.Fprintf(w, "ddpm local: done: %s; final loss %s\n", out, loss)
	return nil
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
