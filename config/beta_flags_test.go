package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestBetaFlagsNamed: betas breaking 0 < beta_start <= beta_end < 1 with one of them set by flag
// are one line naming the flag(s), where the other value comes from and the values to give.
// --beta-start 0.5 over the mnist preset read "preset mnist: invalid run config: betas must
// satisfy 0 < beta_start <= beta_end < 1, got beta_start 0.5, beta_end 0.02", starting with a
// preset that never held 0.5. Without a beta flag the line names the file and the YAML fields.
func TestBetaFlagsNamed(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("preset: mnist\nbeta_start: 0.03\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--preset", "mnist", "--beta-start", "0.5"},
			"--beta-start 0.5 is more than beta_end 0.02 of preset mnist: give --beta-start 0.02 or less, or --beta-end 0.5 or more too"},
		{[]string{"--preset", "mnist", "--beta-end", "1e-05"},
			"--beta-end 1e-05 is less than beta_start 0.0001 of preset mnist: give --beta-end 0.0001 or more, or --beta-start 1e-05 or less too"},
		{[]string{"--preset", "mnist", "--beta-start", "0.02", "--beta-end", "0.0001"},
			"--beta-start 0.02 is more than --beta-end 0.0001: the betas rise from beta_start to beta_end; swap them"},
		{[]string{"--preset", "mnist", "--beta-start", "0"}, "--beta-start 0: want a value in (0, 1)"},
		{[]string{"--preset", "mnist", "--beta-end", "1"}, "--beta-end 1: want a value in (0, 1)"},
		{[]string{"--config", cfg},
			cfg + ": invalid run config: betas must satisfy 0 < beta_start <= beta_end < 1, got beta_start 0.03, beta_end 0.02"},
		{[]string{"--config", cfg, "--beta-end", "0.01"},
			"--beta-end 0.01 is less than beta_start 0.03 of config " + cfg + ": give --beta-end 0.03 or more, or --beta-start 0.01 or less too"},
	} {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		_, err := f.Resolve()
		if !errors.Is(err, ErrInvalid) || err.Error() != tc.want {
			t.Errorf("%v:\n got %v\nwant %s", tc.args, err, tc.want)
		}
	}
}

// TestBetaFlagOtherValueOutOfRange: a beta flag over a file whose other beta is itself out of
// (0, 1) is not matched to that value: the line names the file's value (Validate). It read
// "--beta-start 0.5 is more than beta_end -0.5 of config FILE: give --beta-start -0.5 or less",
// advising a beta out of range.
func TestBetaFlagOtherValueOutOfRange(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		file string
		args []string
		want string
	}{
		{"preset: mnist\nbeta_end: -0.5\n", []string{"--beta-start", "0.5"},
			": invalid run config: betas must satisfy 0 < beta_start <= beta_end < 1, got beta_start 0.5, beta_end -0.5"},
		{"preset: mnist\nbeta_start: 2\n", []string{"--beta-end", "0.5"},
			": invalid run config: betas must satisfy 0 < beta_start <= beta_end < 1, got beta_start 2, beta_end 0.5"},
	} {
		cfg := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(cfg, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f := AddFlags(fs)
		if err := fs.Parse(append([]string{"--config", cfg}, tc.args...)); err != nil {
			t.Fatal(err)
		}
		_, err := f.Resolve()
		if !errors.Is(err, ErrInvalid) || err.Error() != cfg+tc.want {
			t.Errorf("%q %v:\n got %v\nwant %s", tc.file, tc.args, err, cfg+tc.want)
		}
	}
}
