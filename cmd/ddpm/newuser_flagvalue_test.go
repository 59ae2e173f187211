package main

import (
	"context"
	"path/filepath"
	"testing"

	"ddpm/internal/testutil"
)

// TestNewUserFlagTakenAsValue: a string flag whose value was forgotten, so that the next flag
// became its value, is one line and exit 2, and nothing is made: "ddpm local --out --quiet"
// created a run folder named --quiet and trained a 2000-step run into it; "ddpm sample --out
// --force" would write a PNG named --force.
func TestNewUserFlagTakenAsValue(t *testing.T) {
	testutil.DDPMBinary(t) // built from the module, before the working directory moves
	dir := t.TempDir()
	t.Chdir(dir)
	// ddpm local through the real binary: a version without the check starts real processes,
	// which must not be this test binary.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--steps", "50", "--trainers", "1", "--coordinators", "1", "--samples", "0", "--out", "--quiet"}, "local: --out --quiet: --out needs a value (--quiet is a flag of ddpm local)"},
		{[]string{"--trainers", "1", "--coordinators", "1", "--samples", "0", "--out", "--steps=50"}, "local: --out --steps=50: --out needs a value (--steps=50 is a flag of ddpm local)"},
	} {
		r := runLocalCmd(t, tc.args...)
		if r.code != 2 || r.out != "ddpm: "+tc.want+"\n" {
			t.Errorf("ddpm local %v: exit %d\n%s\nwant exit 2 %q", tc.args, r.code, r.out, tc.want)
		}
		mustNotExist(t, filepath.Join(dir, "--quiet"))
		mustNotExist(t, filepath.Join(dir, "--steps=50"))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sample", "--checkpoint", "run", "--out", "--force"}, "sample: --out --force: --out needs a value (--force is a flag of ddpm sample)"},
		{[]string{"eval", "bpd", "--checkpoint", "-h"}, "eval bpd: --checkpoint -h: --checkpoint needs a value (-h is a flag of ddpm eval bpd)"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}
