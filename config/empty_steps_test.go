package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// TestEmptyConfigRefused: a --config file that sets no field (0 bytes, blanks and comments, an
// empty mapping, null) is refused in one line naming it, with --preset and with a default
// preset too; with either, such a file used to train the whole preset without a word. Load
// refuses it the same way without the flag advice.
func TestEmptyConfigRefused(t *testing.T) {
	dir := t.TempDir()
	known := "celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist"
	for name, body := range map[string]string{"zero.yaml": "", "comments.yaml": "# the mnist run\n\n  # later\n",
		"mapping.yaml": "{}\n", "null.yaml": "null\n", "marker.yaml": "---\n# nothing\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"--config", p}, {"--config", p, "--preset", "mnist", "--steps", "10"}} {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			f := AddFlags(fs)
			f.DefaultPreset = "mnist"
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			_, err := f.Resolve()
			want := p + " is empty: a run config names at least its preset (preset: NAME; " + known +
				") and the fields it changes; to train a preset as it is, give --preset NAME without --config"
			if !errors.Is(err, ErrLoad) || err.Error() != want {
				t.Errorf("%v:\n got %v\nwant %s", args, err, want)
			}
		}
		_, err := Load(p)
		want := p + " is empty: a run config names at least its preset (preset: NAME; " + known + ") and the fields it changes"
		if !errors.Is(err, ErrLoad) || err.Error() != want {
			t.Errorf("Load %s:\n got %v\nwant %s", name, err, want)
		}
	}
	// One field is no empty file.
	p := filepath.Join(dir, "preset.yaml")
	if err := os.WriteFile(p, []byte("# x\npreset: mnist\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Errorf("preset-only file: %v", err)
	}
}

// TestStepsFlagShorterThanCheckpointEvery: checkpoint_every above steps, one of them set by flag,
// is one line naming the flag(s) as typed, where the other value comes from, and the value to
// give. --steps 20 over the mnist preset read "flags: invalid run config: checkpoint_every 50 is
// larger than the run (steps 20)": a source that is no file, and no way out. Without a flag in
// it the line names the file and the YAML field.
func TestStepsFlagShorterThanCheckpointEvery(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte("preset: mnist\nsteps: 10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--preset", "mnist", "--steps", "20"},
			"--steps 20 is shorter than checkpoint_every 50 of preset mnist: give --checkpoint-every 20 or less too"},
		{[]string{"--preset", "mnist", "--steps", "20", "--checkpoint-every", "30"},
			"--checkpoint-every 30 is more than --steps 20: give --checkpoint-every 20 or less"},
		{[]string{"--config", cfg, "--checkpoint-every", "30"},
			"--checkpoint-every 30 is more than steps 10 of config " + cfg + ": give --checkpoint-every 10 or less, or --steps 30 or more too"},
		{[]string{"--config", cfg},
			cfg + ": invalid run config: checkpoint_every 50 is larger than the run (steps 10): give checkpoint_every 10 or less, or more steps"},
		{[]string{"--config", cfg, "--lr", "5"},
			"--lr must be in (0, 1], got 5\n" +
				cfg + ": invalid run config: checkpoint_every 50 is larger than the run (steps 10): give checkpoint_every 10 or less, or more steps"},
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
