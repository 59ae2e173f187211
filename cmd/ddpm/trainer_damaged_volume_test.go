package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestStandaloneDamagedVolume: standalone trainers on volumes a disk damaged, each exiting with
// status 1 and one line on stderr saying what to do, never a Go trace or a silent restart:
//   - the root page of an arena bucket of the oldest checkpoint in checkpoints.db zeroed (the
//     tester zeroed pages 2, 3 or 5 of a trainer's volume): the trainer resumes and, when its
//     first save's prune deletes that checkpoint, exits naming the damage and to move the file
//     aside. It panicked in bbolt's DeleteBucket ("assertion failed: Page expected to be: 2, but self
//     identifies as 0"), exit status 2, which `ddpm local` takes for a config conflict;
//   - checkpoints.db emptied (0 bytes): the trainer refuses to start. bbolt made a new file of
//     it and the trainer started over at step 0, though the volume had held step 4.
//
// The run is stopped after its checkpoint of step 4 and resumed with the same flags.
func TestStandaloneDamagedVolume(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// train runs a standalone trainer of a 200-step run on vol; with stopAt > 0 it is stopped
	// (SIGTERM) once its log says checkpoint stopAt is saved. It returns stderr and the result.
	train := func(vol string, stopAt int64) (string, error) {
		cmd := exec.CommandContext(ctx, bin, "trainer", "--standalone", "--preset", "mnist", "--steps", "200",
			"--checkpoint-every", "1", "--global-batch", "4", "--t", "20", "--data-dir", vol)
		cmd.Dir = root
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Step int64  `json:"step"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && stopAt > 0 && line.Msg == "checkpoint saved" && line.Step >= stopAt {
				cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		err = cmd.Wait()
		return stderr.String(), err
	}
	status := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return -1
	}
	vol := filepath.Join(root, "vol")
	if out, err := train(vol, 4); err != nil { // stopped after step 4 or 5
		t.Fatalf("first run: %v\n%s", err, out)
	}
	empty := filepath.Join(root, "empty")
	if err := os.CopyFS(empty, os.DirFS(vol)); err != nil {
		t.Fatal(err)
	}

	db := filepath.Join(vol, trainer.CheckpointFile)
	page := oldestArenaPage(t, db)
	f, err := os.OpenFile(db, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	if _, err := f.WriteAt(make([]byte, ps), int64(page)*int64(ps)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := train(vol, 0)
	want := fmt.Sprintf("ddpm: trainer: this trainer's volume: checkpoint: prune %s: the file is damaged (bbolt: assertion failed: Page expected to be: %d, "+
		"but self identifies as 0) and cannot be written safely; move it aside: corrupt checkpoint\n", db, page)
	if status(err) != 1 || out != want {
		t.Errorf("page 2 zeroed: %v, stderr %q; want status 1 and %q", err, out, want)
	}

	edb := filepath.Join(empty, trainer.CheckpointFile)
	if err := os.Truncate(edb, 0); err != nil {
		t.Fatal(err)
	}
	out, err = train(empty, 0)
	want = fmt.Sprintf("ddpm: %s is empty (0 bytes), not a checkpoint file: the checkpoints of this volume are lost; move it aside to start the run over from step 0\n", edb)
	if status(err) != 1 || out != want {
		t.Errorf("empty checkpoint file: %v, stderr %q; want status 1 and %q", err, out, want)
	}
	if fi, err := os.Stat(edb); err != nil || fi.Size() != 0 {
		t.Errorf("the empty file after the refusal: %v, %v; want it left empty", fi, err)
	}
}

// oldestArenaPage is the root page of the first arena bucket (in key order) of the oldest
// checkpoint in the checkpoint file at path: a page only a deletion of that checkpoint walks.
func oldestArenaPage(t *testing.T, path string) uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var page uint64
	if err := db.View(func(tx *bolt.Tx) error {
		root := tx.Bucket([]byte("checkpoints"))
		if root == nil {
			return errors.New("no checkpoints bucket")
		}
		k, _ := root.Cursor().First()
		step := root.Bucket(k)
		if step == nil {
			return fmt.Errorf("key %x is no bucket", k)
		}
		return step.ForEach(func(k, v []byte) error {
			if b := step.Bucket(k); v == nil && b != nil && page == 0 && b.Root() != 0 {
				page = uint64(b.Root())
			}
			return nil
		})
	}); err != nil || page == 0 {
		t.Fatalf("%s: no arena bucket page found (%v)", path, err)
	}
	return page
}
