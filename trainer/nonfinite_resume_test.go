package trainer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
)

// TestNonFiniteStreakResumes: a checkpoint written at the second of a streak of steps skipped
// for a non-finite gradient records the streak (the run record "\nnon-finite steps:2" after the
// seed's empty start record); the run resumed from it (through a real bbolt store) has the
// uninterrupted run's state hash and stops with the same ErrDiverged at the same step, three
// skipped steps later. The streak used to reset on Restore, so the resumed run went on for
// MaxNonFiniteSteps more skipped steps where the uninterrupted one stopped. A checkpoint
// without the line (every one written before) resumes with no streak; a line this build cannot
// read is ErrMismatch; the start record before the line is still read by InitSHA256.
func TestNonFiniteStreakResumes(t *testing.T) {
	run, ds := mnistRun(t, 20)
	run.GlobalBatch, run.MaxTrainers = 2, 2
	ctx := context.Background()
	fresh := func() *Trainer {
		t.Helper()
		tr, err := New(run, ds)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	// badSteps runs n steps through nanPeer and returns the last one's error.
	badSteps := func(tr *Trainer, n int) error {
		t.Helper()
		tr.SetRing(nanPeer{}, 0, 1, 2)
		var err error
		for i := range n {
			if err != nil {
				t.Fatalf("bad step %d of %d after %v", i+1, n, err)
			}
			var p Progress
			p, err = tr.Step(ctx)
			if !p.Skipped {
				t.Fatalf("step %d not skipped", p.Step)
			}
		}
		return err
	}

	a := fresh()
	if _, err := a.Step(ctx); err != nil {
		t.Fatal(err)
	}
	if err := badSteps(a, 2); err != nil {
		t.Fatal(err)
	}
	snap := a.Snapshot(2, "fp")
	if string(snap.RNG) != "\nnon-finite steps:2" || NonFiniteStreak(snap.RNG) != 2 {
		t.Fatalf("run record at step %d: %q (streak %d), want %q", snap.Step, snap.RNG, NonFiniteStreak(snap.RNG), "\nnon-finite steps:2")
	}
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "checkpoints.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Save(snap); err != nil {
		t.Fatal(err)
	}
	saved, err := st.Get(snap.Step)
	if err != nil {
		t.Fatal(err)
	}

	b := fresh()
	if err := b.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if got, want := checkpoint.StateHash(b.Snapshot(3, "fp")), checkpoint.StateHash(snap); got != want {
		t.Fatalf("resumed state hash %.12s, uninterrupted %.12s", got, want)
	}
	const want = "trainer: training diverged: 5 consecutive steps with non-finite gradients (last step 6)"
	for name, tr := range map[string]*Trainer{"uninterrupted": a, "resumed": b} {
		if err := badSteps(tr, 3); !errors.Is(err, ErrDiverged) || err.Error() != want {
			t.Errorf("%s run, 3 more skipped steps: %v; want %q", name, err, want)
		}
	}

	// A checkpoint of the same state without the streak line: no streak, 4 more skipped steps
	// go on (the 5th would stop the run).
	old := *saved
	old.RNG = nil
	c := fresh()
	if err := c.Restore(&old); err != nil {
		t.Fatal(err)
	}
	if err := badSteps(c, MaxNonFiniteSteps-1); err != nil {
		t.Fatalf("resumed from a checkpoint without a streak: %v after %d skipped steps", err, MaxNonFiniteSteps-1)
	}
	// A good step ends the streak: the record is the start record alone again.
	c.SetRing(Solo{}, 0, 1, 3)
	if p, err := c.Step(ctx); err != nil || p.Skipped {
		t.Fatalf("good step: %+v, %v", p, err)
	}
	if rng := c.Snapshot(3, "fp").RNG; rng != nil {
		t.Fatalf("run record after a good step: %q, want none", rng)
	}

	for _, rng := range []string{"\nnon-finite steps:5", "\nnon-finite steps:0", "\nnon-finite steps:02", "\nnon-finite steps:x", "\nskipped:2"} {
		bad := *saved
		bad.RNG = []byte(rng)
		line := strings.TrimPrefix(rng, "\n")
		wantErr := "trainer: does not match the run: checkpoint step 3: run record line \"" + line + "\": want \"non-finite steps:N\" and a count of 1 to 4"
		if err := fresh().Restore(&bad); !errors.Is(err, ErrMismatch) || err.Error() != wantErr {
			t.Errorf("Restore of run record %q: %v, want %q", rng, err, wantErr)
		}
		if n := NonFiniteStreak(bad.RNG); n != 0 {
			t.Errorf("NonFiniteStreak(%q) = %d, want 0", rng, n)
		}
	}
	sum := strings.Repeat("ab", 32)
	if got := InitSHA256([]byte(initRecord + sum + "\nnon-finite steps:3")); got != sum {
		t.Errorf("InitSHA256 of a record with a streak: %q, want %q", got, sum)
	}
	if rec := runRecord([]byte(initRecord+sum), 3); string(rec) != initRecord+sum+"\nnon-finite steps:3" || NonFiniteStreak(rec) != 3 {
		t.Errorf("runRecord(start, 3) = %q", rec)
	}
}
