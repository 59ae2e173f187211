package main

import (
	"path/filepath"
	"testing"

	"ddpm/internal/localrun"
	"ddpm/internal/viz"
)

// TestPolishS24ConfigIsRunFile: a run folder's own files given as --config (its local.json, its
// loss.csv, a certificate) to ddpm local, ddpm trainer and ddpm coordinator are named for what
// they are, with what to give instead, one line, exit 2. They were the YAML decoder's "unknown
// field "config_hash"" and "the document is a string".
func TestPolishS24ConfigIsRunFile(t *testing.T) {
	dir, _ := stoppedRunFixture(t)
	if err := viz.WriteLossCSV(filepath.Join(dir, localrun.LossCSV), []viz.LossPoint{{Step: 1, Loss: 0.5, LR: 2e-4, GradNorm: 1}}); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(dir, localrun.ManifestFile)
	loss := filepath.Join(dir, localrun.LossCSV)
	yaml := filepath.Join(dir, localrun.ConfigFile)
	cert := filepath.Join(dir, localrun.CertsDir, "ca.crt")
	record := manifest + " is ddpm local's run record, not a run config; to continue that run: ddpm local --resume " + dir + " (its run config is " + yaml + ")"
	history := loss + " is a run's loss history (CSV; ddpm loss reads it), not a run config; the run config beside it is " + yaml
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"ddpm: " + record, []string{"local", "--config", manifest, "--out", filepath.Join(t.TempDir(), "run")}},
		{"ddpm: " + history, []string{"local", "--config", loss, "--out", filepath.Join(t.TempDir(), "run")}},
		{"ddpm: " + record, []string{"trainer", "--standalone", "--config", manifest, "--data-dir", t.TempDir(), "--insecure"}},
		{"ddpm: " + history, []string{"coordinator", "--id", "1", "--raft-addr", "127.0.0.1:1", "--grpc-addr", "127.0.0.1:2", "--peers", "1=127.0.0.1:1=127.0.0.1:2", "--config", loss, "--data-dir", t.TempDir(), "--insecure", "--bootstrap"}},
		{"ddpm: " + cert + " is a PEM certificate or key (a --certs folder's), not a run config", []string{"local", "--config", cert, "--out", filepath.Join(t.TempDir(), "run")}},
	} {
		nuWant(t, 2, tc.want, tc.args...)
	}
}
