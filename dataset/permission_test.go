package dataset

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// permChildEnv names, in the process TestOpenPermission starts as another user, the folder whose
// data that user may not read.
const permChildEnv = "DDPM_TEST_PERMISSION_DIR"

// TestOpenPermission: Open of data this user may not read (an image folder, a folder below one
// it may not search, an idx images file, a prepared folder's index.json) is one line naming the
// path refused, wrapping os.ErrPermission and not ErrNotFound: the data is there. It was
// "dataset not found: P: open P: permission denied" (ErrNotFound), and a folder below one it may
// not search "dataset not found: P: no such file or directory (...)". Run as root, whom no file
// mode stops, the test runs itself again as uid 65534 through setpriv (skipped without it).
func TestOpenPermission(t *testing.T) {
	if dir := os.Getenv(permChildEnv); dir != "" {
		checkOpenPermission(t, dir)
		return
	}
	top := t.TempDir()
	for _, d := range []string{"imgs", "locked/imgs", "prepared"} {
		if err := os.MkdirAll(filepath.Join(top, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"imgs/a.png", "locked/imgs/a.png", "train-images-idx3-ubyte", "prepared/" + indexName} {
		if err := os.WriteFile(filepath.Join(top, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for d, mode := range map[string]os.FileMode{top: 0o755, filepath.Dir(top): 0o755, filepath.Join(top, "imgs"): 0o700,
		filepath.Join(top, "locked"): 0o700} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() != 0 {
		checkOpenPermission(t, top)
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("running as root without setpriv: no user here that file modes stop")
	}
	// A copy of this test binary the other user may run.
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "dataset.test")
	src, err := os.Open(os.Args[0])
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
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestOpenPermission$", "-test.count=1", "-test.v")
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), permChildEnv+"="+top)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestOpenPermission") {
		t.Errorf("as uid 65534: %v\n%s", err, out)
	}
}

// checkOpenPermission opens each unreadable dataset under top (see TestOpenPermission).
func checkOpenPermission(t *testing.T, top string) {
	for _, tc := range []struct{ spec, refused string }{
		{filepath.Join(top, "imgs"), filepath.Join(top, "imgs")},
		{filepath.Join(top, "locked", "imgs"), filepath.Join(top, "locked", "imgs")},
		{filepath.Join(top, "train-images-idx3-ubyte"), filepath.Join(top, "train-images-idx3-ubyte")},
		{filepath.Join(top, "prepared"), filepath.Join(top, "prepared", indexName)},
	} {
		_, err := Open(tc.spec, Options{})
		want := tc.refused + ": permission denied (this user may not read it: give it read access)"
		if err == nil || err.Error() != want || !errors.Is(err, os.ErrPermission) || errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%s): %v (os.ErrPermission %v, ErrNotFound %v), want %q wrapping os.ErrPermission only",
				tc.spec, err, errors.Is(err, os.ErrPermission), errors.Is(err, ErrNotFound), want)
		}
	}
}
