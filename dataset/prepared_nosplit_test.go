package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A prepared copy of an image folder has no splits, as the folder has none: a test split asked
// of it is ErrNoSplit (so that eval bpd evaluates its images and says they are no test split),
// with the folder's line; it was answered with all its images, and eval called them "test". The
// train split that trainers ask for is the whole set, as for the folder.
func TestPreparedFolderHasNoSplit(t *testing.T) {
	src := t.TempDir()
	for i, name := range []string{"a.png", "b.png"} {
		if err := os.WriteFile(filepath.Join(src, name), encodePNG(t, pattern(8, 8, i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "prep")
	if _, err := Prepare(ds, out, 0); err != nil {
		t.Fatal(err)
	}
	_, err = Open(out, Options{Split: "test"})
	want := "unsupported option: " + out + ": a prepared copy of an image folder has no test split (all its images are one set; give no split)"
	if !errors.Is(err, ErrNoSplit) || !errors.Is(err, ErrOption) || err.Error() != want {
		t.Fatalf("test split of a prepared folder: %v\nwant ErrNoSplit %q", err, want)
	}
	for _, o := range []Options{{}, {Split: "train"}} {
		p, err := Open(out, o)
		if err != nil || p.Len() != 2 {
			t.Fatalf("Open(%s, %+v): %v", out, o, err)
		}
	}
}
