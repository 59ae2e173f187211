package dataset

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestPrepareFolderModesFollowUmask: the folder `ddpm dataset prepare` makes (a real process,
// which inherits this test's umask) and its files have the modes mkdir and creat give under the
// umask, 0777 and 0666 less it, as any folder the user makes: with umask 022 other users (the
// trainers of a Kubernetes init container's root prepare, colleagues on a shared file system)
// may read it, with 027 the group, with 002 the group may write too. The old code made the
// folder 0700 whatever the umask (os.MkdirTemp, then a rename), so that only its maker could
// read it, and index.json 0644 less the umask.
func TestPrepareFolderModesFollowUmask(t *testing.T) {
	src := filepath.Join(t.TempDir(), "grey")
	writeLevels(t, src, true)
	ddpmBinary(t) // built under the usual umask
	for _, tc := range []struct {
		umask         int
		folder, files fs.FileMode
	}{
		{0o022, 0o755, 0o644},
		{0o027, 0o750, 0o640},
		{0o002, 0o775, 0o664},
	} {
		out := filepath.Join(t.TempDir(), "prepared")
		old := syscall.Umask(tc.umask)
		stdout, stderr, code := runDDPM(t, "dataset", "prepare", src, "--out", out)
		syscall.Umask(old)
		if code != 0 || !strings.HasPrefix(stdout, "prepared 5 images of 1x8x8 into 1 shards in "+out+"\n") {
			t.Fatalf("umask %03o: prepare: exit %d\n%s%s", tc.umask, code, stdout, stderr)
		}
		st, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsDir() || st.Mode().Perm() != tc.folder {
			t.Errorf("umask %03o: %s has mode %v, want a folder of mode %#o", tc.umask, out, st.Mode(), tc.folder)
		}
		entries, err := os.ReadDir(out)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			if !info.Mode().IsRegular() || info.Mode().Perm() != tc.files {
				t.Errorf("umask %03o: %s has mode %v, want a file of mode %#o", tc.umask, e.Name(), info.Mode(), tc.files)
			}
		}
		if want := []string{"index.json", "shard-00000.bin"}; !slices.Equal(names, want) {
			t.Errorf("umask %03o: the prepared folder holds %v, want %v", tc.umask, names, want)
		}
	}
}
