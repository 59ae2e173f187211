package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFolderHasNoTestSplit: an image folder has no test split, so a test split asked of it
// (Options.Split, a ":test" suffix, `ddpm dataset inspect --split test`) is refused in one line;
// it was accepted and answered with the training images. The train split (and no split) opens it.
func TestFolderHasNoTestSplit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "faces")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"a.png", "b.png"} {
		if err := os.WriteFile(filepath.Join(dir, n), encodePNG(t, pattern(8, 8, i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := "unsupported option: " + dir + ": an image folder has no test split (all its images are one set; give no split)"
	for _, c := range []struct {
		spec string
		opts Options
	}{{dir, Options{Split: "test"}}, {dir + ":test", Options{}}} {
		_, err := Open(c.spec, c.opts)
		if !errors.Is(err, ErrNoSplit) || !errors.Is(err, ErrOption) || err.Error() != want {
			t.Fatalf("Open(%s, %+v): %v\nwant %s", c.spec, c.opts, err, want)
		}
	}
	for _, opts := range []Options{{}, {Split: "train"}} {
		ds, err := Open(dir, opts)
		if err != nil || ds.Len() != 2 || Describe(ds).Split != "" || ds.Name() != "folder/faces" {
			t.Fatalf("Open(%s, %+v): %v", dir, opts, err)
		}
	}
	_, stderr, code := runDDPM(t, "dataset", "inspect", dir, "--split", "test")
	if code != 2 || stderr != "ddpm: "+want+"\n" {
		t.Fatalf("inspect --split test: exit %d, %q", code, stderr)
	}
}
