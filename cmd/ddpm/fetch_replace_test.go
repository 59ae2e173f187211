package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/internal/testutil"
)

// TestCheckpointFetchForceKeepsOldOnFailure: ddpm checkpoint fetch --force replacing a held
// step with other bytes, in a process that cannot grow the file (its file-size limit is the
// file's size, as on a full disk), fails with one line and leaves the held step committed with
// its sha256. The command uncommitted the held step in one transaction and saved the new one
// in another: the failed save left the file without a committed copy of the step.
func TestCheckpointFetchForceKeepsOldOnFailure(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed:", err)
	}
	addrA, sumA := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 1))
	addrC, sumC := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 4)) // the same step, other bytes
	out := filepath.Join(t.TempDir(), "checkpoints.db")
	if _, err := runCLI(t, context.Background(), nil, "checkpoint", "fetch", addrA, "--step", "50", "--out", out, "--insecure"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prlimit, fmt.Sprintf("--fsize=%d", fi.Size()), "--", testutil.DDPMBinary(t),
		"checkpoint", "fetch", addrC, "--step", "50", "--out", out, "--insecure", "--force")
	got, err := cmd.CombinedOutput()
	want := fmt.Sprintf("ddpm: checkpoint fetch: checkpoint: save step 50: grow %s: file too large (the checkpoints in %s are unchanged)\n", out, out)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || string(got) != want {
		t.Errorf("fetch --force under a file-size limit: %v\n got %q\nwant %q", err, got, want)
	}
	listed := func() []checkpoint.Info {
		t.Helper()
		st, err := checkpoint.Open(out, checkpoint.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		list, err := st.List()
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	if list := listed(); len(list) != 1 || !list[0].Committed || list[0].SHA256 != sumA[0] {
		t.Fatalf("%s after the failed fetch: %+v; want step 50 committed with sha256 %s", out, list, sumA[0])
	}
	// Without the limit the same command replaces it.
	if stdout, err := runCLI(t, context.Background(), nil, "checkpoint", "fetch", addrC, "--step", "50", "--out", out, "--insecure", "--force"); err != nil ||
		!strings.HasSuffix(stdout, "-> "+out+"\n") {
		t.Fatalf("fetch --force: %q, %v", stdout, err)
	}
	if list := listed(); len(list) != 1 || !list[0].Committed || list[0].SHA256 != sumC[0] {
		t.Fatalf("%s after fetch --force: %+v; want step 50 committed with sha256 %s", out, list, sumC[0])
	}
}
