package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"ddpm/internal/testutil"
)

// TestFlagValueWords: a value a number, duration or true/false flag cannot take is one line of
// the real binary in our words, naming the flag and the value as given: not a whole number, not
// a number, not true or false, not a duration (with examples), or out of range with the end of
// the range passed (a negative value of an unsigned flag: at least 0). Exit 2, nothing made.
// The lines quoted strconv and time: `invalid argument "1O" for "--steps" flag:
// strconv.ParseInt: parsing "1O": invalid syntax`.
func TestFlagValueWords(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	out := filepath.Join(t.TempDir(), "run")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"local", "--data", "mnist", "--out", out, "--steps", "1O"},
			`local: --steps "1O": not a whole number (see ddpm local --help)`},
		{[]string{"local", "--data", "mnist", "--out", out, "--steps=99999999999999999999"},
			`local: --steps "99999999999999999999": out of range (at most 9223372036854775807) (see ddpm local --help)`},
		{[]string{"local", "--data", "mnist", "--out", out, "--lr", "1e"},
			`local: --lr "1e": not a number (see ddpm local --help)`},
		{[]string{"local", "--data", "mnist", "--out", out, "--lr", "-1e999"},
			`local: --lr "-1e999": out of range (at least -1.8e+308) (see ddpm local --help)`},
		{[]string{"local", "--data", "mnist", "--out", out, "--flip=maybe"},
			`local: --flip "maybe": not true or false (see ddpm local --help)`},
		{[]string{"local", "--data", "mnist", "--out", out, "--seed", "-1"},
			`local: --seed "-1": out of range (at least 0) (see ddpm local --help)`},
		{[]string{"status", "--coordinator", "127.0.0.1:1", "--timeout", "5"},
			`status: --timeout "5": not a duration (e.g. 30s, 5m) (see ddpm status --help)`},
		{[]string{"coordinator", "--heartbeat-timeout", "99999999999h"},
			`coordinator: --heartbeat-timeout "99999999999h": out of range (at most 2562047h47m16.854775807s) (see ddpm coordinator --help)`},
		{[]string{"sample", "--checkpoint", out, "--out", out + ".png", "--n", "2.5"},
			`sample: --n "2.5": not a whole number (see ddpm sample --help)`},
		{[]string{"dataset", "inspect", "mnist", "--resolution", "twenty"},
			`dataset inspect: --resolution "twenty": not a whole number (see ddpm dataset inspect --help)`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, bin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		var xe *exec.ExitError
		want := "ddpm: " + tc.want + "\n"
		if !errors.As(err, &xe) || xe.ExitCode() != 2 || stderr.String() != want || stdout.Len() != 0 {
			t.Errorf("ddpm %v: %v, stdout %q, stderr %q; want exit 2, %q", tc.args, err, stdout.String(), stderr.String(), want)
		}
	}
	mustNotExist(t, out)
	mustNotExist(t, out+".png")
}

// TestFlagValueProblemSizes: the range said is the flag type's own (int8, uint16, float32), and
// a flag type of ddpm's own (--step) keeps the words its Set gives.
func TestFlagValueProblemSizes(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Int8("small", 0, "")
	fs.Uint16("port", 0, "")
	fs.Float32("f", 0, "")
	var step int64
	addStepFlag(fs, &step, "")
	for _, tc := range []struct{ arg, name, problem string }{
		{"--small=200", "--small", "out of range (at most 127)"},
		{"--small=-129", "--small", "out of range (at least -128)"},
		{"--port=70000", "--port", "out of range (at most 65535)"},
		{"--port=-3", "--port", "out of range (at least 0)"},
		{"--port=-x", "--port", "not a whole number"},
		{"--f=1e39", "--f", "out of range (at most 3.4e+38)"},
		{"--step=-3", "", ""},
	} {
		err := fs.Parse([]string{tc.arg})
		if name, problem := flagValueProblem(err); err == nil || name != tc.name || problem != tc.problem {
			t.Errorf("%s: %v gives %q %q; want %q %q", tc.arg, err, name, problem, tc.name, tc.problem)
		}
	}
}
