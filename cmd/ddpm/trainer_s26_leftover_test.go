package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// treeS26 lists everything under dir (path, mode, size, and a file's bytes), or "absent" when
// there is no dir: two listings are equal when nothing in it was made, moved or changed.
func treeS26(t *testing.T, dir string) []string {
	t.Helper()
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return []string{"absent"}
	}
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		entry := fmt.Sprintf("%s %v %d", strings.TrimPrefix(p, dir), fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			entry += fmt.Sprintf(" %x", b)
		}
		out = append(out, entry)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrainerS26WrongCoordinatorLeavesNothing: a `ddpm trainer` process given a real replica's
// HTTP port as --coordinator exits 2 with the one line naming that port and the replica's gRPC
// port, and leaves its --data-dir exactly as it found it: an empty folder stays empty, one with a
// file of its own keeps only that, and one that was not there is not made (nor its parent). It
// left a new, empty checkpoints.db (1 MiB) in each.
func TestTrainerS26WrongCoordinatorLeavesNothing(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	_, grpc0, http0 := startLeadingReplica(t, bin, certs, "c0")
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	withFile := filepath.Join(root, "with-file")
	for _, d := range []string{empty, withFile} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(withFile, "notes.txt"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "ddpm: joining [" + http0 + "]: coordinator: not a coordinator: " + http0 + " is the HTTP port (--http-addr) of ddpm coordinator c0 (it answered HTTP/1.1), not its gRPC port: " +
		"--coordinator takes a coordinator's --grpc-addr, e.g. " + grpc0 + " (the leader's)\n"
	for _, vol := range []string{empty, withFile, filepath.Join(root, "new", "t0")} {
		before := treeS26(t, root)
		// Its log (stdout) says it was joining; stderr is the one line.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "trainer", "--id", "t0", "--preset", "mnist", "--coordinator", http0, "--listen", freeAddr(t),
			"--data-dir", vol, "--certs", certs)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
			t.Errorf("--data-dir %s: %v, stderr %q\nwant exit status 2 and stderr %q", vol, err, stderr.String(), want)
		}
		if after := treeS26(t, root); !slices.Equal(after, before) {
			t.Errorf("--data-dir %s: the folder holds\n%q\nafter the refusal; before it held\n%q", vol, after, before)
		}
	}
}
