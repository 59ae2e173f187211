package main

import "testing"

// TestShellWord: the paths in the commands our lines tell users to run are single shell words:
// as they are when no shell treats a character of them specially, else single-quoted.
func TestShellWord(t *testing.T) {
	for in, want := range map[string]string{
		"runs/demo-2026-11-30": "runs/demo-2026-11-30",
		"/data/mnist:test":     "/data/mnist:test",
		"my data/run 1":        "'my data/run 1'",
		"run's":                `'run'\''s'`,
		"a$b":                  "'a$b'",
		"x*":                   "'x*'",
		"~/runs":               "'~/runs'",
		"":                     "''",
		"ünïcode":              "'ünïcode'",
	} {
		if got := shellWord(in); got != want {
			t.Errorf("shellWord(%q) = %s, want %s", in, got, want)
		}
	}
}
