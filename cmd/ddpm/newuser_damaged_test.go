package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/checkpoint"
)

// damagedNewestFixture is evalFixture's run folder with a second checkpoint, step 1, whose
// parameters are then damaged on disk (bytes of its body overwritten, the header left): the
// newest checkpoint no longer verifies, step 0 does.
func damagedNewestFixture(t *testing.T) (dir, file string) {
	t.Helper()
	dir, file = evalFixture(t)
	st, err := checkpoint.Open(file, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := *fixtureCkpt
	c.Step = 1
	c.Params = slices.Repeat([]float32{7.25}, len(fixtureCkpt.Params)) // a run of bytes to find
	if _, err := st.Save(&c); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	run := bytes.Repeat(binary.LittleEndian.AppendUint32(nil, math.Float32bits(7.25)), 64)
	i := bytes.Index(b, run)
	if i < 0 {
		t.Fatal("step 1's parameters not found in the file")
	}
	copy(b[i:], bytes.Repeat([]byte{0xff}, 16))
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

// TestNewUserDamagedNewest: sample, eval bpd and checkpoint export without --step take the
// newest checkpoint that verifies; when a newer one is damaged they say so in a warning line
// (which step, which file, the step used and the command that names the damage), since the
// output is not of the run's newest weights. They passed it over in silence: a run whose final
// checkpoint was damaged got samples.png, bits/dim and exported weights of an older step, each
// named only by its step number.
func TestNewUserDamagedNewest(t *testing.T) {
	dir, file := damagedNewestFixture(t)
	want := "warning: step 1 of " + file + " is damaged; this used step 0, the newest that verifies (ddpm checkpoint verify " + file + " names the damage)"
	tmp := t.TempDir()
	for _, tc := range []struct {
		args []string
		cmd  string
	}{
		{[]string{"sample", "--checkpoint", dir, "--n", "1", "--out", filepath.Join(tmp, "s.png")}, "ddpm sample"},
		{[]string{"eval", "bpd", "--checkpoint", dir, "--data", "mnist", "--n", "1", "--batch", "1"}, "ddpm eval bpd"},
		{[]string{"checkpoint", "export", dir, "--out", filepath.Join(tmp, "w.safetensors")}, "ddpm checkpoint export"},
	} {
		var stderr bytes.Buffer
		if _, err := runCLI(t, context.Background(), &stderr, tc.args...); err != nil {
			t.Fatalf("%v: %v\n%s", tc.args, err, stderr.String())
		}
		if !slices.Contains(strings.Split(stderr.String(), "\n"), tc.cmd+": "+want) {
			t.Errorf("ddpm %s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), tc.cmd+": "+want, stderr.String())
		}
	}
	// With --step, or when the newest verifies, no such line.
	var stderr bytes.Buffer
	if _, err := runCLI(t, context.Background(), &stderr, "checkpoint", "export", dir, "--step", "0", "--out", filepath.Join(tmp, "w0.safetensors")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(stderr.String(), "damaged") {
		t.Errorf("--step 0: %s", stderr.String())
	}
	if msg := damagedNewerWarning("ddpm sample", file, 1); msg != "" {
		t.Errorf("step 1 used: %q", msg)
	}
}

// TestNewUserEvalProgressToFile: eval bpd with stderr not a terminal (a log file, a pipe)
// reports the timestep it has reached every evalProgressEvery within a batch, as sample does;
// it printed nothing until the first batch was done (2.5 minutes for the default 50 images of
// the tiny model on 2 cores, and a Ctrl-C before that left the user with no line at all).
func TestNewUserEvalProgressToFile(t *testing.T) {
	dir, _ := evalFixture(t)
	defer func(d time.Duration) { evalProgressEvery = d }(evalProgressEvery)
	evalProgressEvery = time.Nanosecond
	var stderr bytes.Buffer // no terminal
	if _, err := runCLI(t, context.Background(), &stderr, "eval", "bpd", "--checkpoint", dir, "--data", "mnist", "--n", "2", "--batch", "2"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(stderr.String(), "\n")
	if !slices.ContainsFunc(lines, func(l string) bool {
		return strings.HasPrefix(l, "ddpm eval bpd: 0/2 images, timestep ") && strings.Contains(l, " of 20 of images 1-2 (")
	}) {
		t.Errorf("no timestep report in stderr:\n%s", stderr.String())
	}
}

// TestNewUserEvalStaleEMA: eval bpd of EMA weights that still hold most of a random start warns
// as sample does, with the way out (--raw); it did not, and a from-scratch run's EMA at step 610
// measured 6.55 bits/dim where its raw parameters measured 2.44. With --raw, no warning.
func TestNewUserEvalStaleEMA(t *testing.T) {
	dir, file := evalFixture(t)
	want := "ddpm eval bpd: warning: the EMA weights of step 0 (ema_decay 0.999) still hold 100% of the step-0 weights (0.999^0); from a random start their bound is mostly the random start's: give --raw to evaluate the raw parameters"
	for _, raw := range []bool{false, true} {
		args := []string{"eval", "bpd", "--checkpoint", dir, "--data", "mnist", "--n", "1", "--batch", "1"}
		if raw {
			args = append(args, "--raw")
		}
		var stderr bytes.Buffer
		if _, err := runCLI(t, context.Background(), &stderr, args...); err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(strings.Split(stderr.String(), "\n"), want); got == raw {
			t.Errorf("ddpm %s (checkpoint %s): warning given %v, want %v:\n%s", strings.Join(args, " "), file, got, !raw, stderr.String())
		}
	}
}
