package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestBenchAllreduceFlags: bench allreduce refuses, before any rank process starts, each flag a
// rank or the end of the run used to refuse: one rank (it ran and printed busbw 0 with an algbw
// of tens of TB/s), a --chunk-bytes the ring does not take (each worker printed the error, then
// "bench worker 0 of 2: exit status 1", exit 1), a negative --procs (run as 0), a missing
// --anchor file, --cpuprofile folder or --json folder (the last after the whole bench). One
// line each, exit status 2, nothing written.
func TestBenchAllreduceFlags(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ranks", "1"}, `--ranks: "1" is not a rank count in [2, 64] (one rank has no peer to reduce with)`},
		{[]string{"--chunk-bytes", "-1"}, "--chunk-bytes -1: want a multiple of 4 in [4, 4194304] (or 0, the ring's default)"},
		{[]string{"--chunk-bytes", "6"}, "--chunk-bytes 6: want a multiple of 4 in [4, 4194304] (or 0, the ring's default)"},
		{[]string{"--procs", "-1"}, "--procs -1: want 1 or more (or 0, the cores shared out among the ranks)"},
		{[]string{"--transport", "tcp"}, `--transport "tcp": want direct or grpc`},
		{[]string{"--anchor", filepath.Join(missing, "latest.json")}, "--anchor " + filepath.Join(missing, "latest.json") + " does not exist"},
		{[]string{"--cpuprofile", missing}, "--cpuprofile " + missing + ": no such folder (give an existing folder for the profiles)"},
		{[]string{"--json", filepath.Join(missing, "ddpm.json")}, "--json " + filepath.Join(missing, "ddpm.json") + ": folder " + missing + " does not exist"},
	} {
		args := append([]string{"bench", "allreduce", "--sizes", "4B"}, tc.args...)
		_, err := runCLI(t, context.Background(), nil, args...)
		wantExit(t, args, err, 2, tc.want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("refused commands wrote %v", entries)
	}
}
