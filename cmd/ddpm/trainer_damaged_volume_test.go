package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"

	"ddpm/internal/testutil"
	"ddpm/trainer"
)

// TestStandaloneDamagedVolume: standalone trainers on volumes a disk damaged, each exiting with
// one line on stderr saying what to do, never a Go trace or a silent restart:
//   - the root page of an arena bucket of the oldest checkpoint in checkpoints.db zeroed (the
//     tester zeroed pages 2, 3 or 5 of a trainer's volume): the trainer resumes and, when its
//     first save's prune deletes that checkpoint, exits naming the damage and to move the file
//     aside. It panicked in bbolt's DeleteBucket ("assertion failed: Page expected to be: 2, but self
//     identifies as 0"), exit status 2, which `ddpm local` takes for a config conflict;
//   - checkpoints.db emptied (0 bytes): the trainer refuses to start, status 2 (the volume's
//     only record is gone; stop 26: it was 1, a failure a restart may cure). bbolt made a new
//     file of it and the trainer started over at step 0, though the volume had held step 4.
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
	if status(err) != 2 || out != want {
		t.Errorf("empty checkpoint file: %v, stderr %q; want status 2 and %q", err, out, want)
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

// TestStandaloneAllCheckpointsDamaged: a standalone trainer whose volume holds committed
// checkpoints, every one with a page of its body zeroed (the file's tree intact), exits 2 (stop
// 26: it was 1, though no restart changes it; as an unreadable file, TestTrainerS26StandaloneDamagedExit2) with
// one line naming the file, the damaged steps, and to move the file aside to start over, and
// leaves the file byte for byte as it was. It warned "damaged checkpoint uncommitted on this
// volume" for each, with a why that promised a holder's copy a standalone trainer has none of,
// started over at step 0 and pruned the damaged copies.
func TestStandaloneAllCheckpointsDamaged(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vol := filepath.Join(root, "vol")
	args := []string{"trainer", "--standalone", "--preset", "mnist", "--steps", "4",
		"--checkpoint-every", "2", "--global-batch", "4", "--t", "20", "--data-dir", vol}
	if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("first run: %v\n%s", err, out)
	}
	db := filepath.Join(vol, trainer.CheckpointFile)
	steps := zeroBodyPages(t, db)
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	prefix := fmt.Sprintf("ddpm: trainer: this trainer's volume: every committed checkpoint in %s is damaged (%s; step %d: checkpoint: %s step %d: ",
		db, stepNames(steps), steps[len(steps)-1], db, steps[len(steps)-1])
	suffix := ": corrupt checkpoint); it was left as it is: move it aside to start the run over from step 0\n"
	out := stderr.String()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.HasPrefix(out, prefix) || !strings.HasSuffix(out, suffix) || strings.Count(out, "\n") != 1 {
		t.Errorf("every checkpoint damaged: %v, stderr %q; want status 2 and one line %q...%q", err, out, prefix, suffix)
	}
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the damaged file was changed by the refused trainer (%v)", err)
	}
}

// zeroBodyPages zeroes, for every checkpoint in the checkpoint file at path, one page inside a
// chunk of its first arena (the data, not bbolt's tree), and returns those steps ascending.
func zeroBodyPages(t *testing.T, path string) []int64 {
	t.Helper()
	ps := os.Getpagesize()
	var steps []int64
	var offsets []int64
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	base := db.Info().Data
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("checkpoints")).ForEach(func(k, _ []byte) error {
			cb := tx.Bucket([]byte("checkpoints")).Bucket(k)
			return cb.ForEach(func(ak, v []byte) error {
				ab := cb.Bucket(ak)
				if v != nil || ab == nil || len(steps) > 0 && steps[len(steps)-1] == int64(binary.BigEndian.Uint64(k)) {
					return nil
				}
				_, chunk := ab.Cursor().First()
				if len(chunk) < 3*ps {
					return fmt.Errorf("step %x: a chunk of %d bytes, want at least 3 pages", k, len(chunk))
				}
				off := int64(uintptr(unsafe.Pointer(&chunk[len(chunk)/2]))-base) / int64(ps) * int64(ps)
				steps, offsets = append(steps, int64(binary.BigEndian.Uint64(k))), append(offsets, off)
				return nil
			})
		})
	})
	db.Close()
	if err != nil || len(steps) < 2 {
		t.Fatalf("%s: checkpoints %v (%v); want two or more with data", path, steps, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, off := range offsets {
		if _, err := f.WriteAt(make([]byte, ps), off); err != nil {
			t.Fatal(err)
		}
	}
	return steps
}

// stepNames is the damaged steps as the refusal names them: "steps 2, 4".
func stepNames(steps []int64) string {
	s := "steps "
	for i, st := range steps {
		if i > 0 {
			s += ", "
		}
		s += strconv.FormatInt(st, 10)
	}
	return s
}
