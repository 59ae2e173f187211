package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// ParityCommand returns the command that runs the PyTorch parity oracle
// (../shared/anchors/pytorch/parity.py) with args, for a test whose package sits one folder below
// the repository root. DDPM_PARITY_PY overrides the script's path and DDPM_TORCH_PYTHON the
// Python that has Debian's python3-torch (default /usr/bin/python3). The oracle is part of the
// test set-up (make setup), so a missing one fails the test; it never skips.
func ParityCommand(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	script := os.Getenv("DDPM_PARITY_PY")
	if script == "" {
		script = filepath.Join("..", "..", "shared", "anchors", "pytorch", "parity.py")
	}
	py := os.Getenv("DDPM_TORCH_PYTHON")
	if py == "" {
		py = "/usr/bin/python3"
	}
	for _, p := range []string{script, py} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("parity oracle missing: %v (run make setup; set DDPM_PARITY_PY / DDPM_TORCH_PYTHON)", err)
		}
	}
	return exec.Command(py, append([]string{script}, args...)...)
}
