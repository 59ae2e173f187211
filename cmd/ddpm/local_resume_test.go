package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// TestLocalResumeSaysStep: ddpm local --resume says first, before it starts any process, which
// step it continues from: step 0 for a run without a committed checkpoint (a real 4-step run
// of two trainers, which then commits step 4). On the volumes that run left, the line names
// step 4 and trainer-0, and with trainer-0's volume gone, trainer-1 (its trainer holding the
// newest committed checkpoint).
func TestLocalResumeSaysStep(t *testing.T) {
	run := makeLocalRun(t, 2, func(r *config.Run) { r.MinTrainers = 2 })
	r := runLocalCmd(t, "--resume", run, "--quiet")
	if want := fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet\n", run); r.code != 0 ||
		!strings.HasPrefix(r.out, want) || strings.Count(r.out, "resuming") != 1 || !strings.Contains(r.out, "ddpm local: done: ") {
		t.Fatalf("exit %d with\n%s\nwant exit 0, the run done, starting with the line\n%s", r.code, r.out, want)
	}
	if got, want := resumeLine(run), fmt.Sprintf("ddpm local: resuming %s from committed checkpoint at step 4 (trainer-0)", run); got != want {
		t.Errorf("resumeLine = %q, want %q", got, want)
	}
	if err := os.Remove(filepath.Join(localrun.TrainerDir(run, 0), trainer.CheckpointFile)); err != nil {
		t.Fatal(err)
	}
	if got, want := resumeLine(run), fmt.Sprintf("ddpm local: resuming %s from committed checkpoint at step 4 (trainer-1)", run); got != want {
		t.Errorf("resumeLine = %q, want %q", got, want)
	}
}
