package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLocalPresetWithoutData: `ddpm local --data cifar10` (or --preset cifar10 alone) names a
// preset that ships no data; the one line says which presets do and what to give, status 2, and
// nothing is made. It was "preset cifar10: invalid run config: dataset is missing". A --data
// that is a typo of a preset (no such file either) is asked "did you mean ...?"; it got the
// list of every preset and dataset.Open's error.
func TestLocalPresetWithoutData(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	const only = "(only fashion-mnist and mnist ship theirs)"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data", "cifar10"}, "ddpm: --data cifar10: the cifar10 preset has no data built in " + only +
			"; give --data PATH (a CIFAR-10 folder or cifar-10-binary.tar.gz) and --preset cifar10"},
		{[]string{"--preset", "cifar10"}, "ddpm: --preset cifar10: the cifar10 preset has no data built in " + only +
			"; give --data PATH (a CIFAR-10 folder or cifar-10-binary.tar.gz) and --preset cifar10"},
		{[]string{"--data", "lsun-church"}, "ddpm: --data lsun-church: the lsun-church preset has no data built in " + only +
			"; give --data PATH (an LSUN church_outdoor LMDB folder, the one holding data.mdb) and --preset lsun-church"},
		{[]string{"--data", "mnst"}, "ddpm: --data mnst is neither a preset nor a dataset (no such file or folder); did you mean mnist?"},
		{[]string{"--data", "cifar"}, "ddpm: --data cifar is neither a preset nor a dataset (no such file or folder); did you mean cifar10?"},
		{[]string{"--data", "fashion"}, "ddpm: --data fashion is neither a preset nor a dataset (no such file or folder); did you mean fashion-mnist?"},
		// No preset near it: the presets listed once (it said "not a preset" twice; new user s26).
		{[]string{"--data", "nosuch"}, "ddpm: --data nosuch is neither a preset (celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist) nor a dataset (no such file or folder)"},
	} {
		args := append(tc.args, "--steps", "10", "--checkpoint-every", "10", "--out", out)
		wantOneLine(t, runLocalCmd(t, args...), 2, tc.want)
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ddpm local %v made %s (stat: %v)", args, out, err)
		}
	}
}
