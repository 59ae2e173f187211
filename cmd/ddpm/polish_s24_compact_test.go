package main

import (
	"fmt"
	"os"
	"testing"
)

// TestPolishS24CompactCommand: ddpm checkpoint compact of a trainer's checkpoints.db (a real
// mnist checkpoint, saved with the room a trainer preallocates) prints its size before and after,
// the after size being the file's; compacting it again leaves it as it is and says so. It printed
// "A -> A" and rewrote the file.
func TestPolishS24CompactCommand(t *testing.T) {
	_, file := evalFixture(t)
	size := func() int64 {
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := size()
	out, stderr, code := nuRun(t, "checkpoint", "compact", file)
	after := size()
	if want := fmt.Sprintf("%s: %s -> %s\n", file, humanBytes(before), humanBytes(after)); code != 0 || out != want || stderr != "" || after >= before {
		t.Fatalf("first compact: exit %d, stdout %q, stderr %q; want %q, %d -> fewer bytes (got %d)", code, out, stderr, want, before, after)
	}
	was, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, code = nuRun(t, "checkpoint", "compact", file)
	if want := fmt.Sprintf("%s: %s, already compact (left as it was)\n", file, humanBytes(after)); code != 0 || out != want || stderr != "" {
		t.Fatalf("second compact: exit %d, stdout %q, stderr %q; want %q", code, out, stderr, want)
	}
	if now, err := os.ReadFile(file); err != nil || string(now) != string(was) {
		t.Fatalf("second compact changed the file (%v)", err)
	}
}
