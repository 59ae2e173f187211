package main

import (
	"context"
	"io"
	"testing"
)

// TestNewUserS24EvalInterruptedOne: eval bpd --batch 1 interrupted within its first image says
// "before the first image was done"; it said "before the first 1 images were done". (In
// process: on a terminal the progress line names the timestep at once, and the interruption
// comes there, as Ctrl-C's context cancellation; a real process reports to a pipe every 10 s.)
func TestNewUserS24EvalInterruptedOne(t *testing.T) {
	dir, _ := evalFixture(t)
	defer func(f func(io.Writer) bool) { isTerminal = f }(isTerminal)
	isTerminal = func(io.Writer) bool { return true }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOnWrite{mark: "timestep 1 of", cancel: cancel}
	args := []string{"eval", "bpd", "--checkpoint", dir, "--n", "3", "--batch", "1"}
	_, err := runCLI(t, ctx, w, args...)
	wantExit(t, args, err, exitInterrupted, "eval bpd interrupted before the first image was done")
}
