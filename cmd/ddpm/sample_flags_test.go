package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestSampleFlagsWithoutEffect: a sample flag given where it changes nothing (--n with
// --interpolate, --every without --progressive, ...) used to be dropped silently (exit 0); it is
// refused in one line, exit 2, before anything is loaded or written.
func TestSampleFlagsWithoutEffect(t *testing.T) {
	dir, _ := evalFixture(t)
	tmp := t.TempDir()
	out, w, a := filepath.Join(tmp, "x.png"), filepath.Join(tmp, "w.safetensors"), filepath.Join(tmp, "a.png")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", out, "--n", "3", "--interpolate", a + "," + a},
			"--n has no effect with --interpolate (it draws one row: A, --lambda-steps+1 mixtures, B); drop --n"},
		{[]string{"--out", out, "--every", "300"},
			"--every sets how often --progressive records the chain; it has no effect without --progressive"},
		{[]string{"--out", out, "--lambda-steps", "4"}, "--lambda-steps has no effect without --interpolate"},
		{[]string{"--out", out, "--interpolate-t", "4"}, "--interpolate-t has no effect without --interpolate"},
		{[]string{"--export-weights", w, "--n", "4"},
			"--n has no effect without --out (only --export-weights is written); give --out or drop --n"},
		{[]string{"--export-weights", w, "--interpolate", a + "," + a},
			"--interpolate has no effect without --out (only --export-weights is written); give --out or drop --interpolate"},
	} {
		args := append([]string{"sample", "--checkpoint", dir}, tc.args...)
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
	}
	mustNotExist(t, out)
	mustNotExist(t, w)
}

// TestSampleNamesEveryFile: the result line names the --progressive file as well as --out (it
// used to end "-> x.png" alone), "every 1 step" in the singular, and one sample's "its" x0.
func TestSampleNamesEveryFile(t *testing.T) {
	dir, file := evalFixture(t)
	tmp := t.TempDir()
	for _, every := range []struct{ flag, words string }{{"5", "every 5 steps"}, {"1", "every 1 step"}} {
		out, prog := filepath.Join(tmp, "x"+every.flag+".png"), filepath.Join(tmp, "p"+every.flag+".png")
		var stderr bytes.Buffer
		if _, err := runCLI(t, context.Background(), &stderr, "sample", "--checkpoint", dir, "--n", "2", "--out", out, "--progressive", prog, "--every", every.flag); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		last := lines[len(lines)-1]
		want := fmt.Sprintf(" -> %s; their predicted x0 %s -> %s", out, every.words, prog)
		if !strings.HasPrefix(last, "ddpm sample: 2 samples of "+file+" step 0 (EMA) in ") || !strings.HasSuffix(last, want) {
			t.Errorf("result line %q, want it to end %q", last, want)
		}
		fileSum(t, out)
		fileSum(t, prog)
	}
	// One sample: "its predicted x0" (it said "their").
	out, prog := filepath.Join(tmp, "one.png"), filepath.Join(tmp, "one-p.png")
	var stderr bytes.Buffer
	if _, err := runCLI(t, context.Background(), &stderr, "sample", "--checkpoint", dir, "--n", "1", "--out", out, "--progressive", prog, "--every", "5"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if want := fmt.Sprintf(" -> %s; its predicted x0 every 5 steps -> %s", out, prog); !strings.HasPrefix(last, "ddpm sample: 1 sample of "+file+" step 0 (EMA) in ") || !strings.HasSuffix(last, want) {
		t.Errorf("result line %q, want it to end %q", last, want)
	}
}
