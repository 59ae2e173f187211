package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/internal/testutil"
)

// unprivileged returns the argv that runs a copy of the ddpm binary with args as a user file
// modes stop: as uid/gid 65534 through setpriv when the test runs as root (skipped when setpriv
// is missing), as this user otherwise. The copy's folder is made reachable to that user.
func unprivileged(t *testing.T, args ...string) []string {
	t.Helper()
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "ddpm")
	src, err := os.Open(testutil.DDPMBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{binDir, filepath.Dir(binDir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	argv := append([]string{bin}, args...)
	if os.Geteuid() != 0 {
		return argv
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("running as root without setpriv: no user here that file modes stop")
	}
	return append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
}

// TestDatasetPermission: data this user may not read (a folder of images, one below a folder it
// may not search, an idx images file) is one line naming the path refused, "P: permission denied
// (...)", for dataset inspect and eval bpd --data (dataset.Open's error wraps os.ErrPermission,
// TestOpenPermission). It was "dataset not found: P: open P: permission denied" (the data is
// there), and a path below a folder it may not search was "dataset not found: P: no such file or
// directory". Through the real binary as an unprivileged user.
func TestDatasetPermission(t *testing.T) {
	run, _ := evalFixture(t)
	top := t.TempDir()
	imgs := filepath.Join(top, "imgs")
	writeImages(t, imgs, 2, 28, true)
	below := filepath.Join(top, "locked", "imgs")
	writeImages(t, below, 2, 28, true)
	idx := filepath.Join(top, "train-images-idx3-ubyte")
	if err := os.WriteFile(idx, []byte{0, 0, 8, 3, 0, 0, 0, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	// The other user reaches top, the run folder and its checkpoint, but not imgs nor locked.
	for d, mode := range map[string]os.FileMode{top: 0o755, filepath.Dir(top): 0o755, imgs: 0o700, filepath.Dir(below): 0o700,
		run: 0o755, filepath.Dir(run): 0o755, filepath.Join(run, "trainer-0"): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	want := func(p string) string {
		return "ddpm: " + p + ": permission denied (this user may not read it: give it read access)\n"
	}
	for _, tc := range []struct {
		args []string
		path string
	}{
		{[]string{"dataset", "inspect", imgs}, imgs},
		{[]string{"dataset", "inspect", below}, below},
		{[]string{"dataset", "inspect", idx}, idx},
		{[]string{"eval", "bpd", "--checkpoint", run, "--data", imgs, "--n", "1"}, imgs},
	} {
		argv := unprivileged(t, tc.args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want(tc.path) {
			t.Errorf("ddpm %s: %v\n%s\nwant exit 2 %q", strings.Join(tc.args, " "), err, stderr.String(), want(tc.path))
		}
	}
}
