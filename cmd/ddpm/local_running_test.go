package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// TestLocalOutWhileRunning: a new `ddpm local --out RUN` while RUN's run is going (another
// process holds RUN/local.lock; here this test) says what --resume says, "RUN is already
// running (pid N)", with its status 1, for the run's own config and for another, and writes
// nothing. It said "already holds this run ...; continue it with --resume RUN" (or "holds a
// different run ... or --resume RUN"), advice that --resume then refused as running. Once the
// run is down, the same config is told to --resume again.
func TestLocalOutWhileRunning(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.MinTrainers = 1 })
	cfg := filepath.Join(run, localrun.ConfigFile)
	same := []string{"--config", cfg, "--trainers", "1", "--coordinators", "1", "--samples", "0", "--quiet", "--out", run}
	other := append(slices.Clone(same), "--steps", "8", "--checkpoint-every", "8")
	lock, err := localrun.Lock(run)
	if err != nil {
		t.Fatal(err)
	}
	before := tree(t, run)
	running := fmt.Sprintf("ddpm: %s is already running (pid %d)", run, os.Getpid())
	wantOneLine(t, runLocalCmd(t, same...), 1, running)
	wantOneLine(t, runLocalCmd(t, other...), 1, running)
	wantOneLine(t, runLocalCmd(t, "--resume", run), 1, running)
	if after := tree(t, run); !slices.Equal(before, after) {
		t.Errorf("the refused runs changed the run folder:\nbefore %q\nafter  %q", before, after)
	}
	if err := localrun.Running(run); err == nil || err.Error() != running[len("ddpm: "):] {
		t.Errorf("localrun.Running while held = %v", err)
	}
	lock.Release()
	if err := localrun.Running(run); err != nil {
		t.Errorf("localrun.Running once released = %v", err)
	}
	var m localrun.Manifest
	if m, err = localrun.ReadManifest(run); err != nil {
		t.Fatal(err)
	}
	wantOneLine(t, runLocalCmd(t, same...), 2, fmt.Sprintf("ddpm: output folder %s already holds this run (config %.12s); continue it with --resume %s or choose another --out", run, m.ConfigHash, run))
}
