package main

import (
	"context"
	"strings"
	"testing"
)

// TestEvalDataHelp: eval bpd --data says what it takes in the user's words, as dataset inspect
// takes a dataset (it said "dataset spec").
func TestEvalDataHelp(t *testing.T) {
	out, err := runCLI(t, context.Background(), nil, "eval", "bpd", "--help")
	const line = "      --data string         the data to evaluate on: mnist, fashion-mnist (:test, :train) or a path, as ddpm dataset inspect takes it (default: the run's dataset)\n"
	if err != nil || !strings.Contains(out, line) {
		t.Errorf("eval bpd --help: %v; want the line %q in:\n%s", err, line, out)
	}
}
