// Package testutil holds helpers shared by several packages' tests.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var built struct {
	sync.Once
	path string
	err  error
}

// BuildDDPM builds cmd/ddpm once per test process into a fresh temporary folder and returns the
// binary's path, or the build's error with the compiler's output. Tests that start the real
// binary (end-to-end, chaos, CLI and manifest tests) share this one build.
func BuildDDPM() (string, error) {
	built.Do(func() {
		dir, err := os.MkdirTemp("", "ddpm-test-bin")
		if err != nil {
			built.err = err
			return
		}
		built.path = filepath.Join(dir, "ddpm")
		if out, err := exec.Command("go", "build", "-o", built.path, "ddpm/cmd/ddpm").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/ddpm: %v\n%s", err, out)
		}
	})
	return built.path, built.err
}

// DDPMBinary is BuildDDPM for a test: it fails the test if the build fails.
func DDPMBinary(t testing.TB) string {
	t.Helper()
	path, err := BuildDDPM()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// RemoveDDPM deletes the folder of a binary BuildDDPM made; call it from TestMain after m.Run.
func RemoveDDPM() {
	if built.path != "" {
		os.RemoveAll(filepath.Dir(built.path))
	}
}
