package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestFlagValueNamesFlag: a bad value given by flag together with --config FILE is reported under
// the flag, not under FILE; values from the file still name the file, line by line. A malformed
// --dataset-fingerprint read "FILE: invalid run config: dataset_fingerprint ..." for a file that
// pins no fingerprint. The fingerprint is quoted as typed, "sha256:" included.
func TestFlagValueNamesFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "run.yaml")
	badLR := filepath.Join(dir, "lr.yaml")
	badFP := filepath.Join(dir, "fp.yaml")
	for p, doc := range map[string]string{
		good:  "preset: mnist\nsteps: 100\n",
		badLR: "preset: mnist\nlr: 7\n",
		badFP: "preset: mnist\ndataset_fingerprint: sha256:abc\n",
	} {
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const hint = " is not a whole sha256: give the 64 hex digits `ddpm dataset inspect` prints (with or without its sha256: prefix)"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", good, "--dataset-fingerprint", "xyz"}, `--dataset-fingerprint "xyz"` + hint},
		{[]string{"--config", good, "--dataset-fingerprint", "sha256:abc"}, `--dataset-fingerprint "sha256:abc"` + hint},
		{[]string{"--preset", "mnist", "--dataset-fingerprint", "abc"}, `--dataset-fingerprint "abc"` + hint},
		{[]string{"--config", badFP}, badFP + `: invalid run config: dataset_fingerprint "sha256:abc"` + hint},
		// One line per value, each naming where it came from, in Validate's order.
		{[]string{"--config", badLR, "--steps", "0", "--heartbeat-timeout", "1ms"},
			"--steps must be positive, got 0\n" + badLR + ": invalid run config: lr must be in (0, 1], got 7\n--heartbeat-timeout must be at least 100ms, got 1ms"},
		{[]string{"--preset", "mnist", "--dataset", "", "--t", "1"}, "--dataset is missing\n--t (diffusion steps) must be in 2..100000, got 1"},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := f.Resolve()
		if err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalid) {
			t.Errorf("%q:\n got %v\nwant %s", tc.args, err, tc.want)
		}
	}
}
