package tlsauth

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestInitFullDiskLeavesNothing: certs init on a disk that takes no whole file (a file size limit
// of 100 bytes, RLIMIT_FSIZE, as a full disk) fails naming ca.crt and leaves the directory
// empty, so the next certs init, with room again, succeeds. ca.crt used to be left half written
// (100 bytes of PEM), and the next certs init refused it as existing. Runs Init in a child
// process of this test binary, whose limit this one does not share.
func TestInitFullDiskLeavesNothing(t *testing.T) {
	if dir := os.Getenv("TLSAUTH_TEST_FSIZE_DIR"); dir != "" {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 100, Max: 100}); err != nil {
			t.Fatal(err)
		}
		_, err := Init(dir, InitOptions{})
		fmt.Printf("ERR: %v\n", err)
		return
	}
	dir := filepath.Join(t.TempDir(), "certs")
	cmd := exec.Command(os.Args[0], "-test.run=^TestInitFullDiskLeavesNothing$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TLSAUTH_TEST_FSIZE_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, CAFile)
	if want := "ERR: tlsauth: write " + ca + ": write " + ca + ": file too large"; !strings.Contains(string(out), want+"\n") {
		t.Fatalf("child's output:\n%s\nwant the line %q", out, want)
	}
	if es, err := os.ReadDir(dir); err != nil || len(es) != 0 {
		t.Fatalf("after the failed init the directory holds %v (%v), want nothing", es, err)
	}
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatalf("certs init with room again: %v", err)
	}
}
