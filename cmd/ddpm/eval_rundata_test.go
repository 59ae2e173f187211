package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"ddpm/trainer"
)

// TestEvalBPDRunDatasetMissingHere: eval bpd of a run whose run.yaml names its dataset by a path
// that does not exist from the working directory (a relative path of a run started elsewhere)
// says that it is the run's dataset, which file names it, and that --data gives it, exit 2; it
// used to print only "dataset not found: PATH: no such file or directory", which read as if
// the user had typed PATH.
func TestEvalBPDRunDatasetMissingHere(t *testing.T) {
	dir, _ := evalFixture(t)
	run := fixtureRun
	run.Dataset = "imgs-of-another-directory"
	cfg := filepath.Join(dir, trainer.ConfigFile)
	if err := os.WriteFile(cfg, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "dataset not found: imgs-of-another-directory, the run's dataset (named in "+cfg+"), does not exist from this directory; give its path with --data")
}
