package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestCoordinatorRulesVersionFlag: --rules-version (for tests of mixed-release clusters) is
// hidden from the help, and a negative one is refused with one line and exit 2, writing nothing
// (it reached a panic of coordinator.NewReplica).
func TestCoordinatorRulesVersionFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	args := []string{"coordinator", "--id", "c0", "--raft-addr", "127.0.0.1:17000", "--grpc-addr", "127.0.0.1:17001",
		"--peers", "c0=127.0.0.1:17000=127.0.0.1:17001", "--data-dir", dir, "--insecure", "--bootstrap", "--rules-version", "-1"}
	_, err := runCLI(t, context.Background(), nil, args...)
	wantExit(t, args, err, 2, "coordinator: --rules-version -1: want 0 (this binary's) or more")
	mustNotExist(t, dir)
	out, err := runCLI(t, context.Background(), nil, "coordinator", "--help")
	if err != nil || !strings.Contains(out, "--data-dir") || strings.Contains(out, "--rules-version") {
		t.Errorf("ddpm coordinator --help: %v, want the flags without --rules-version:\n%s", err, out)
	}
}
