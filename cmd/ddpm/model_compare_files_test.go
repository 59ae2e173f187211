package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestModelCompareMissingFiles: model compare run outside the repository's root, with no PyTorch
// anchor beside the repository, or with a --python that is not there, stops before timing
// anything with one line naming the flag, the path and the way on. It used to say "--pytorch-script:
// stat bench/pytorch_engine.py: no such file or directory", to time our side and then end with a
// Python traceback and "/usr/bin/python3: exit status 1" (no anchor), or with "fork/exec
// /nowhere/python3: no such file or directory".
func TestModelCompareMissingFiles(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "repo", "bench", "pytorch_engine.py")
	if err := os.MkdirAll(filepath.Dir(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("raise SystemExit(3)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	python := filepath.Join(dir, "nowhere", "python3")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"model", "compare", "--preset", "tiny", "--pytorch-script", "bench/no_such_engine.py"},
			"--pytorch-script bench/no_such_engine.py: no such file (the default is relative to the repository's root: run ddpm model compare there, or give --pytorch-script PATH)"},
		{[]string{"model", "compare", "--preset", "tiny", "--pytorch-script", script, "--python", python},
			"--python " + python + ": no such program (the PyTorch side needs a Python with torch: Debian's python3-torch, /usr/bin/python3; make bench-engine installs it)"},
		{[]string{"model", "compare", "--preset", "tiny", "--pytorch-script", script, "--python", "sh"},
			"--anchors " + filepath.Join(dir, "shared", "anchors", "pytorch") + ": no unet_bench.py there (the PyTorch anchor the twin imports its models from; give --anchors DIR, the folder that holds it)"},
		{[]string{"model", "compare", "--preset", "tiny", "--pytorch-script", script, "--python", "sh", "--anchors", dir},
			"--anchors " + dir + ": no unet_bench.py there (the PyTorch anchor the twin imports its models from; give --anchors DIR, the folder that holds it)"},
	} {
		_, err := runCLI(t, context.Background(), nil, tc.args...)
		wantExit(t, tc.args, err, 2, tc.want)
	}
}
