package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"ddpm/internal/tlsauth"
)

// TestCertsFullDiskIsFailure: certs init and certs issue on a disk that takes no whole file (a
// file size limit of 100 bytes, RLIMIT_FSIZE, as a full disk) fail with status 1, a failure of
// the machine as the README's exit statuses say, in one line naming the directory and the
// system's error, and leave nothing behind. They exited 2, as for a mistake in the command
// line, with "tlsauth: write PATH: write PATH: file too large". The commands run in a child
// process of this test binary, whose limit this one does not share.
func TestCertsFullDiskIsFailure(t *testing.T) {
	if args := os.Getenv("DDPM_TEST_FSIZE_ARGS"); args != "" {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 100, Max: 100}); err != nil {
			t.Fatal(err)
		}
		configureRoot()
		certsInitFlags.hosts, certsInitFlags.days = nil, 365
		rootCmd.SetArgs(strings.Split(args, "\x1f"))
		err := rootCmd.Execute()
		var ee *exitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.code
		}
		fmt.Printf("EXIT %d: %v\n", code, err)
		return
	}
	child := func(args ...string) string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCertsFullDiskIsFailure$", "-test.count=1")
		cmd.Env = append(os.Environ(), "DDPM_TEST_FSIZE_ARGS="+strings.Join(args, "\x1f"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child %v: %v\n%s", args, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "EXIT ") {
				return l
			}
		}
		t.Fatalf("child %v printed no EXIT line:\n%s", args, out)
		return ""
	}

	dir := filepath.Join(t.TempDir(), "certs")
	ca := filepath.Join(dir, tlsauth.CAFile)
	if got, want := child("certs", "init", dir), "EXIT 1: certs init "+dir+": cannot write there (write "+ca+": file too large)"; got != want {
		t.Errorf("certs init on a full disk:\n got %s\nwant %s", got, want)
	}
	if es, err := os.ReadDir(dir); err != nil || len(es) != 0 {
		t.Errorf("after the failed init %s holds %v (%v), want nothing", dir, es, err)
	}

	if _, err := tlsauth.Init(dir, tlsauth.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "trainer")
	got := child("certs", "issue", "--certs", dir, "--role", "trainer", "--out", out)
	if want := "EXIT 1: certs issue: --out " + out + ": cannot write there (write " + filepath.Join(out, tlsauth.CAFile) + ": file too large)"; got != want {
		t.Errorf("certs issue on a full disk:\n got %s\nwant %s", got, want)
	}
	if es, err := os.ReadDir(out); err != nil || len(es) != 0 {
		t.Errorf("after the failed issue %s holds %v (%v), want nothing", out, es, err)
	}
}
