package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
)

// TestOpenDamagedVolumeSaysWayOut: a trainer's checkpoint file that cannot be read (pages zeroed
// as `dd if=/dev/zero ... seek=2 conv=notrunc` does, cut short, or not a bbolt file) is refused
// with the way on at the end of the line, as an empty one is: a cluster trainer's is moved aside
// and the trainer started again (it fetches the committed checkpoint; the tester's `ddpm local
// --resume` did so once the file was moved); a standalone trainer's is moved aside to start
// over. The lines ended at "corrupt checkpoint", and ddpm local gave up on the trainer with
// them.
func TestOpenDamagedVolumeSaysWayOut(t *testing.T) {
	const (
		cluster = "; move it aside and start the trainer again: it takes the run's committed checkpoint from the cluster"
		solo    = "; it was left as it is: a standalone trainer's volume is its run's only record; restore it from a copy, or move it aside to start the run over from step 0"
	)
	ps := os.Getpagesize()
	newFile := func(t *testing.T) string {
		path := filepath.Join(t.TempDir(), "checkpoints.db")
		st, err := checkpoint.Open(path, checkpoint.Options{})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		return path
	}
	for _, tc := range []struct {
		name       string
		damage     func(t *testing.T, path string)
		standalone bool
		want       string // after the path
	}{
		{"zeroed", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(make([]byte, fi.Size()-int64(2*ps)), int64(2*ps)); err != nil { // every page past the metas
				t.Fatal(err)
			}
		}, false, " is unreadable (assertion failed: Page expected to be: "},
		{"truncated", func(t *testing.T, path string) {
			if err := os.Truncate(path, int64(3*ps)); err != nil {
				t.Fatal(err)
			}
		}, true, fmt.Sprintf(" is truncated: %d bytes on disk, its metadata needs ", 3*ps)},
		{"not bbolt", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a database\n", 2000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, " is not a readable checkpoint file (invalid database): corrupt checkpoint"},
	} {
		path := newFile(t)
		tc.damage(t, path)
		_, err := openVolume(path, tc.standalone)
		way := cluster
		if tc.standalone {
			way = solo
		}
		if err == nil || !strings.HasPrefix(err.Error(), "checkpoint: "+path+tc.want) || !strings.HasSuffix(err.Error(), ": corrupt checkpoint"+way) ||
			!errors.Is(err, checkpoint.ErrCorruptCheckpoint) {
			t.Errorf("%s: openVolume = %v\nwant checkpoint: %s%s...: corrupt checkpoint%s", tc.name, err, path, tc.want, way)
		}
	}
}
