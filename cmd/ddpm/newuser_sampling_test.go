package main

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestNewUserInterruptedSampling: Ctrl-C while ddpm local draws its final samples (the run
// complete) exits 130 with the ddpm sample command that draws the grid the run would have
// written: its --samples count and its seed. The command named neither, so it drew 64 images of
// seed 0 where the run asked for 16 of seed 7.
func TestNewUserInterruptedSampling(t *testing.T) {
	run := filepath.Join(t.TempDir(), "run")
	cmd, out := localCommand(t, "--data", "mnist", "--steps", "2", "--checkpoint-every", "2", "--warmup-steps", "1",
		"--trainers", "1", "--coordinators", "1", "--samples", "16", "--seed", "7", "--out", run)
	live := &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first progress line of the sampling comes after 10 s of it.
	deadline := time.Now().Add(90 * time.Second)
	for !strings.Contains(live.String(), "ddpm sample: images 1-16 of 16") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("no sampling progress within 90 s:\n%s", live.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	out.WriteString(live.String())
	r := finish(t, cmd, out, werr)
	want := "ddpm: interrupted while sampling; the run is complete: draw samples with ddpm sample --checkpoint " + run +
		" --n 16 --seed 7 --out " + filepath.Join(run, "samples.png")
	if r.code != 130 || r.lastLine() != want {
		t.Fatalf("exit %d with\n%s\nwant exit 130 ending in %q", r.code, r.out, want)
	}
	mustNotExist(t, filepath.Join(run, "samples.png"))
	if got := interruptedSamplingLine("r", "r/samples.png", 64, 0); got != "interrupted while sampling; the run is complete: draw samples with ddpm sample --checkpoint r --out r/samples.png" {
		t.Errorf("sample's defaults (64 images, seed 0): %q", got)
	}
}
