package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestConfigWithoutPresetCLI: ddpm trainer and ddpm coordinator compose --config and --preset
// alike: the preset --preset names fills what a config without preset: leaves out (the world
// size below comes from preset mnist), and a config without any preset is one line asking for
// one. They listed a dozen "invalid run config" lines (model "" is unknown, lr must be in
// (0, 1], ...) for `steps: 100` given with --preset mnist.
func TestConfigWithoutPresetCLI(t *testing.T) {
	tmp := t.TempDir()
	cfg := filepath.Join(tmp, "nopreset.yaml")
	if err := os.WriteFile(cfg, []byte("steps: 100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol, raft := filepath.Join(tmp, "vol"), filepath.Join(tmp, "raft")
	coord := []string{"coordinator", "--id", "c0", "--raft-addr", "127.0.0.1:17100", "--grpc-addr", "127.0.0.1:17101",
		"--peers", "c0=127.0.0.1:17100=127.0.0.1:17101", "--data-dir", raft, "--insecure", "--bootstrap", "--config", cfg}
	trainer := []string{"trainer", "--standalone", "--data-dir", vol, "--config", cfg}
	noPreset := cfg + ": invalid run config: names no preset, so nothing fills the fields it leaves out; add `preset: NAME` " +
		"(celebahq, cifar10, fashion-mnist, lsun-bedroom, lsun-cat, lsun-church, mnist) or give --preset NAME, or write every field"
	filled := "--global-batch 2: fewer images than max_trainers 4 of config " + cfg +
		" (a rank would get no samples); give --max-trainers 2 or fewer too"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{trainer, noPreset},
		{coord, noPreset},
		{append(trainer, "--preset", "mnist", "--global-batch", "2"), filled},
		{append(coord, "--preset", "mnist", "--global-batch", "2"), filled},
		// ddpm local: the preset --data names fills the file's gaps.
		{[]string{"local", "--config", cfg, "--data", "mnist", "--global-batch", "2", "--out", filepath.Join(tmp, "run")}, filled},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
	mustNotExist(t, vol)
	mustNotExist(t, raft)
	mustNotExist(t, filepath.Join(tmp, "run"))
}
