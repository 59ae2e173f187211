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

// TestEvalBPDRunDatasetSplitMissing: a run's dataset that exists but lacks the split asked for
// (an idx folder with only the train files) keeps the dataset package's line naming the missing
// file, exit 2; the run's-dataset line said the folder "does not exist from this directory".
func TestEvalBPDRunDatasetSplitMissing(t *testing.T) {
	dir, _ := evalFixture(t)
	idx := filepath.Join(t.TempDir(), "idx")
	if err := os.Mkdir(idx, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(idx, "train-images-idx3-ubyte"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	run := fixtureRun
	run.Dataset = idx
	if err := os.WriteFile(filepath.Join(dir, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"eval", "bpd", "--checkpoint", dir, "--n", "2", "--batch", "2"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "dataset not found: "+idx+": holds no test split (t10k-images-idx3-ubyte.gz missing)")
}
