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

// TestNewUserCheckpointPermission: a checkpoint file this user may not read is one line, exit
// status 2, for checkpoint list and verify and for sample: the file is not damaged. checkpoint
// list and verify exited 1 ("checkpoint: open F: permission denied"), the status their help
// gives a damaged checkpoint. Through the real binary as an unprivileged user (uid 65534 by
// setpriv when the test runs as root, whom no file mode stops). certs init into a folder it may
// not write, and ddpm local's data it may not read, are one line too.
func TestNewUserCheckpointPermission(t *testing.T) {
	dir, file := evalFixture(t)
	binDir := t.TempDir()
	bin := filepath.Join(binDir, "ddpm")
	src, err := os.Open(testutil.DDPMBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	// The other user reaches the binary and the run folder (t.TempDir makes them 0700).
	for _, d := range []string{binDir, filepath.Dir(binDir), dir, filepath.Dir(dir), filepath.Join(dir, "trainer-0")} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(file, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(file, 0o644) })
	want := "ddpm: checkpoint file " + file + " cannot be opened: permission denied (the commands need read access to it)\n"
	outDir := t.TempDir()
	for d, mode := range map[string]os.FileMode{outDir: 0o777, filepath.Dir(outDir): 0o755} {
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(outDir, "s.png")
	for _, args := range [][]string{
		{"checkpoint", "list", dir},
		{"checkpoint", "verify", dir},
		{"sample", "--checkpoint", dir, "--n", "1", "--out", out},
	} {
		argv := append([]string{bin}, args...)
		if os.Geteuid() == 0 {
			argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
			t.Errorf("ddpm %s: %v\n%s\nwant exit 2 %q", strings.Join(args, " "), err, stderr.String(), want)
		}
	}
	mustNotExist(t, out)

	// certs init into a folder this user may not write: one line, exit 2 (was "tlsauth: mkdir
	// D: permission denied").
	ro := filepath.Join(outDir, "ro")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(ro, "certs")
	argv := []string{bin, "certs", "init", certs}
	if os.Geteuid() == 0 {
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if want := "ddpm: certs init " + certs + ": permission denied (give a directory this user may create and write)\n"; !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
		t.Errorf("ddpm certs init %s: %v\n%s\nwant exit 2 %q", certs, err, stderr.String(), want)
	}
	mustNotExist(t, certs)

	// ddpm local --data (or --dataset) of a folder this user may not read: one line, exit 2,
	// nothing made (was "--data D is neither a preset (...) nor a dataset: dataset not found:
	// D: open D: permission denied").
	imgs := filepath.Join(outDir, "imgs")
	writeImages(t, imgs, 2, 32, true)
	if err := os.Chmod(imgs, 0o700); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(outDir, "run")
	for _, tc := range []struct{ flag, what string }{{"--data", "--data"}, {"--dataset", "dataset"}} {
		argv := []string{bin, "local", tc.flag, imgs, "--steps", "50", "--out", run, "--quiet"}
		if os.Geteuid() == 0 {
			argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if want := "ddpm: " + tc.what + " " + imgs + " cannot be read: permission denied (the run's trainers read it as this user: give it read access)\n"; !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
			t.Errorf("ddpm local %s %s: %v\n%s\nwant exit 2 %q", tc.flag, imgs, err, stderr.String(), want)
		}
		mustNotExist(t, run)
	}
}
