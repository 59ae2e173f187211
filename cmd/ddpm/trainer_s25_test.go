package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/coordinator/fsm"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// damagedEmptyVolumeS25 makes the volume folder vol (if need be) with a new, empty
// checkpoints.db in it, then damages the file (damageMetaS25): a trainer's volume whose file no
// longer opens. It returns the file's path and its bytes after the damage.
func damagedEmptyVolumeS25(t *testing.T, vol string) (db string, damaged []byte) {
	t.Helper()
	if err := os.MkdirAll(vol, 0o755); err != nil {
		t.Fatal(err)
	}
	db = filepath.Join(vol, trainer.CheckpointFile)
	st, err := checkpoint.Open(db, checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return db, damageMetaS25(t, db)
}

// damageMetaS25 zeroes the first two pages of the checkpoint file at path (bbolt's two meta
// pages, as `dd if=/dev/zero of=FILE bs=4096 count=2 conv=notrunc` does): bbolt then refuses to
// open it ("invalid database"). It returns the file's bytes after the damage.
func damageMetaS25(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 2*os.Getpagesize()), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// finalStateS25 is the state hash (checkpoint.StateHash: the run's state without the
// generation) of checkpoint step in the trainer volume vol.
func finalStateS25(t *testing.T, vol string, step int64) string {
	t.Helper()
	st, err := checkpoint.Open(filepath.Join(vol, trainer.CheckpointFile), checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Get(step)
	if err != nil {
		t.Fatalf("%s step %d: %v", vol, step, err)
	}
	return checkpoint.StateHash(c)
}

// logLinesS25 returns the JSON log records of NAME in run whose msg is msg.
func logLinesS25(t *testing.T, run, name, msg string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	return jsonRecords(b, msg)
}

// jsonRecords returns the JSON log records (one per line, as slog's JSON handler writes them) in
// text whose msg is msg; lines that are no JSON object are passed over.
func jsonRecords(text []byte, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// TestLocalDamagedTrainerFileRecoversS25: under `ddpm local`, a trainer whose checkpoints.db is
// damaged (its meta pages zeroed while it was stopped, then killed) is restarted by ddpm local
// onto the damaged file; since the other trainer holds the run's newest committed checkpoint, it
// moves the file aside (kept byte for byte as checkpoints.db.damaged-UTCTIME, one warning line
// naming both paths), starts a fresh file, fetches the checkpoint from its peer and the run ends
// (status 0) with the same bits as an undisturbed run of the same config: loss.csv byte-equal,
// and the final checkpoint's state hash equal on both trainers. Before, the trainer exited 1 at
// every start and ddpm local gave up on the run after 3 ("trainer-1 failed 3 times at start-up").
func TestLocalDamagedTrainerFileRecoversS25(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ddpm local twice")
	}
	const steps = 40
	ref, edit := undisturbedRunS25(t, steps)

	run := makeLocalRun(t, 2, edit)
	cmd, out := localCommand(t, "--resume", run, "--quiet")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Past step 4's checkpoint, which both trainers then hold committed.
	waitSteps(t, run, "trainer-1", 0, 6, out)
	pid := childPid(t, run, "trainer-1", 0)
	// Stopped, it writes nothing more: the damage stays as made, and ddpm local restarts the
	// trainer only after the kill, onto the damaged file.
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(localrun.TrainerDir(run, 1), trainer.CheckpointFile)
	damaged := damageMetaS25(t, db)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := finish(t, cmd, out, cmd.Wait())
	if r.code != 0 {
		t.Fatalf("the run with a damaged trainer file: exit %d\n%s", r.code, r.out)
	}

	aside, _ := filepath.Glob(db + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("moved-aside files %v, want one %s.damaged-UTCTIME", aside, db)
	}
	if b, err := os.ReadFile(aside[0]); err != nil || !bytes.Equal(b, damaged) {
		t.Errorf("%s: %v; want the damaged file's %d bytes as they were", aside[0], err, len(damaged))
	}
	warns := logLinesS25(t, run, "trainer-1", MsgDamagedMovedAside)
	if len(warns) != 1 || warns[0]["level"] != "WARN" || warns[0]["file"] != db || warns[0]["moved_to"] != aside[0] {
		t.Errorf("trainer-1's log: %v\nwant one WARN %q with file %s and moved_to %s", warns, MsgDamagedMovedAside, db, aside[0])
	}

	sameRunS25(t, ref, run, 2, steps)
}

// TestLocalDamagedOnlyCopyStopsRunS25: a trainer whose damaged checkpoints.db may be the run's
// only copy of its checkpoints is refused with status 2, so ddpm local stops the run at once with
// one line naming the file, why it was left as it is and `ddpm local --resume RUN`, instead of
// restarting the trainer onto the same file (the file is left byte for byte, nothing moved):
//   - the only trainer of a run, whose volume holds its committed checkpoints;
//   - a run whose coordinators list no committed checkpoint (they may have lost their record).
//
// Before, the trainer exited 1 at each of ddpm local's 3 start attempts.
func TestLocalDamagedOnlyCopyStopsRunS25(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ddpm local")
	}
	wantStop := func(t *testing.T, run, name, db string, damaged []byte, why string) {
		t.Helper()
		r := runLocalCmd(t, "--resume", run, "--quiet")
		want := fmt.Sprintf("ddpm: %s failed at start-up (exit status 2): checkpoint: %s is not a readable checkpoint file (invalid database): corrupt checkpoint; "+
			"it was left as it is: %s (see %s)", name, db, why, filepath.Join(run, localrun.LogsDir, name+".log"))
		if r.code != 1 || r.lastLine() != want {
			t.Errorf("exit %d, last line\n%s\nwant exit 1 and\n%s\n(all output:\n%s)", r.code, r.lastLine(), want, r.out)
		}
		if b, err := os.ReadFile(db); err != nil || !bytes.Equal(b, damaged) {
			t.Errorf("%s after the refusal: %v; want it as it was", db, err)
		}
		if aside, _ := filepath.Glob(db + ".damaged-*"); len(aside) != 0 {
			t.Errorf("moved aside: %v", aside)
		}
		logb, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".log"))
		if n := strings.Count(string(logb), "corrupt checkpoint; it was left as it is"); n != 1 {
			t.Errorf("%s started %d times onto the damaged file, want once:\n%s", name, n, logb)
		}
	}

	t.Run("only holder", func(t *testing.T) {
		run := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 400, 4 })
		cmd, out := localCommand(t, "--resume", run, "--quiet")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		waitSteps(t, run, "trainer-0", 0, 6, out)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if r := finish(t, cmd, out, cmd.Wait()); r.code != 130 {
			t.Fatalf("exit %d after SIGINT:\n%s", r.code, r.out)
		}
		db := filepath.Join(localrun.TrainerDir(run, 0), trainer.CheckpointFile)
		st, err := checkpoint.Open(db, checkpoint.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		newest, err := st.LatestCommitted()
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		damaged := damageMetaS25(t, db)
		wantStop(t, run, "trainer-0", db, damaged, fmt.Sprintf("no other trainer holds the run's newest committed checkpoint (step %d), so this file may be its only copy; "+
			"restore it from a copy, or move it aside, resume the run (ddpm local --resume %s) and roll it back (ddpm checkpoint rollback) to a step another trainer holds or to step 0",
			newest.Step, run))
	})

	t.Run("no committed checkpoint", func(t *testing.T) {
		// min_trainers 2: no checkpoint can be committed without trainer-1.
		run := makeLocalRun(t, 2, func(r *config.Run) { r.MinTrainers = 2 })
		db, damaged := damagedEmptyVolumeS25(t, localrun.TrainerDir(run, 1))
		wantStop(t, run, "trainer-1", db, damaged, fmt.Sprintf("the coordinators list no committed checkpoint of the run, so this file may hold its only copy; "+
			"restore it from a copy, or move it aside and resume the run (ddpm local --resume %s) (it then joins with an empty volume)", run))
	})
}

// TestMoveAsideKeepsEveryFileS25: two damaged files moved aside from one path within a second
// get two names (the second with -2 added), each keeping its own bytes: moveAside never replaces
// a file, and the path is free for a fresh checkpoint file afterwards.
func TestMoveAsideKeepsEveryFileS25(t *testing.T) {
	path := filepath.Join(t.TempDir(), trainer.CheckpointFile)
	var moved []string
	for _, body := range []string{"first damaged file", "second damaged file"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		dst, err := moveAside(path)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != body {
			t.Fatalf("%s holds %q (%v), want %q", dst, b, err, body)
		}
		moved = append(moved, dst)
	}
	if moved[0] == moved[1] || !strings.HasPrefix(moved[0], path+".damaged-") || !strings.HasSuffix(moved[0], "Z") {
		t.Fatalf("moved to %v: want two names %s.damaged-UTCTIME", moved, path)
	}
	if b, err := os.ReadFile(moved[0]); err != nil || string(b) != "first damaged file" {
		t.Fatalf("the first file after the second move: %q, %v", b, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s still there after the move: %v", path, err)
	}
}

// TestHoldsNowS25: a trainer listed among a checkpoint's holders that has rejoined since with an
// empty volume (its Member.Held empty: a lost volume, or a damaged file moved aside) does not
// hold it now, so a trainer with a damaged file does not move its own aside on its account
// (review R1); one that offered or committed it does, and so does a rank that loaded it as its
// generation's start checkpoint and trained past it; a departed holder does not.
func TestHoldsNowS25(t *testing.T) {
	ck := fsm.Checkpoint{Step: 8, SHA256: "aa", Holders: []string{"empty", "gone", "held", "rank"}}
	st := &fsm.State{
		Checkpoints: []fsm.Checkpoint{ck},
		Members: map[string]*fsm.Member{
			"empty": {ID: "empty"},
			"held":  {ID: "held", Held: []fsm.Held{{Step: 4, SHA256: "bb"}, {Step: 8, SHA256: "aa"}}},
			"rank":  {ID: "rank", Step: 9},
			"other": {ID: "other", Held: []fsm.Held{{Step: 8, SHA256: "cc"}}},
		},
		Generation: fsm.Generation{Number: 3, Ring: []string{"empty", "rank"}, World: 2, StartStep: 8, Checkpoint: &ck},
	}
	for id, want := range map[string]bool{"empty": false, "gone": false, "held": true, "rank": true, "other": false} {
		if got := holdsNow(st, id, &ck); got != want {
			t.Errorf("holdsNow(%s) = %v, want %v", id, got, want)
		}
	}
	st.Members["rank"].Step = 8 // not yet past the start: it may still be fetching
	if holdsNow(st, "rank", &ck) {
		t.Errorf("a rank at its start step holds the checkpoint already")
	}
}

// sameRunS25 fails t unless the ddpm local run in folder run ended as the undisturbed run ref
// did: loss.csv byte for byte, and each of its trainers' state at step steps (finalStateS25)
// equal to ref's trainer-0's.
func sameRunS25(t *testing.T, ref, run string, trainers int, steps int64) {
	t.Helper()
	want, err := os.ReadFile(filepath.Join(ref, localrun.LossCSV))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(run, localrun.LossCSV))
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("loss.csv differs from the undisturbed run's (%v):\n%s\nwant\n%s", err, got, want)
	}
	refState := finalStateS25(t, localrun.TrainerDir(ref, 0), steps)
	for i := range trainers {
		if s := finalStateS25(t, localrun.TrainerDir(run, i), steps); s != refState {
			t.Errorf("trainer-%d's step %d state %s, the undisturbed run's %s", i, steps, s, refState)
		}
	}
}

// undisturbedRunS25 runs, as the reference of a disturbed run, a makeLocalRun folder of 2 trainers
// and the given steps (a checkpoint every 4) to its end, and returns the folder and the config
// edit that makes the disturbed run's folder alike. min_trainers is 2: a trainer left alone waits
// for the other, so both runs train every step at world 2 (a world of 1 would sum the batch in
// another order).
func undisturbedRunS25(t *testing.T, steps int64) (ref string, edit func(*config.Run)) {
	t.Helper()
	edit = func(r *config.Run) { r.Steps, r.CheckpointEvery, r.MinTrainers = steps, 4, 2 }
	ref = makeLocalRun(t, 2, edit)
	if r := runLocalCmd(t, "--resume", ref, "--quiet"); r.code != 0 {
		t.Fatalf("reference run: exit %d\n%s", r.code, r.out)
	}
	return ref, edit
}
