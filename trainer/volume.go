package trainer

import (
	"errors"
	"fmt"
	"log/slog"

	"ddpm/checkpoint"
)

// MsgUncommittedDamaged is the log message of UncommitDamaged, one line per step.
const MsgUncommittedDamaged = "damaged checkpoint uncommitted on this volume"

// UncommitDamaged verifies every committed checkpoint of store (checkpoint.Store.Verify: every
// byte against its sha256) and removes the commit mark of each one that is damaged
// (checkpoint.ErrCorruptCheckpoint: a failing disk, a torn file), logging one line per step; it
// returns those steps, ascending. A trainer calls it at start-up, before it tells the cluster
// what it holds. A damaged copy is no restart point: left marked, it stayed on the volume as a
// committed checkpoint for as long as the run never needed it again (an elastic run that had
// moved past it), where sample, eval and export of that step failed on it; the run fetches a
// holder's copy of the step if it does need it. The data stays until that copy replaces it or
// Prune drops it. Errors: the store's, wrapped; a checkpoint that cannot be read for another
// reason is left as it is.
func UncommitDamaged(store *checkpoint.Store, log *slog.Logger) ([]int64, error) {
	return uncommitDamaged(store, log, false)
}

// UncommitDamagedStandalone is UncommitDamaged for a standalone trainer, whose volume is its
// run's only record: no holder elsewhere has a copy. When the volume holds committed
// checkpoints and every one of them is damaged it changes nothing and returns an error
// (ErrVolume, checkpoint.ErrCorruptCheckpoint) naming the file, the steps, the newest one's
// damage, and to move the file aside to start over: uncommitted, the trainer started over at
// step 0 without a word and its prune deleted the damaged copies. A damaged checkpoint beside
// an intact one is uncommitted (one line, as UncommitDamaged), and the trainer resumes from its
// newest intact one.
func UncommitDamagedStandalone(store *checkpoint.Store, log *slog.Logger) ([]int64, error) {
	return uncommitDamaged(store, log, true)
}

func uncommitDamaged(store *checkpoint.Store, log *slog.Logger, standalone bool) ([]int64, error) {
	steps, err := store.Committed()
	if err != nil {
		return nil, fmt.Errorf("trainer: verify committed checkpoints: %w", err)
	}
	var damaged []int64
	var newestIntact int64 = -1
	why := map[int64]error{}
	for _, s := range steps {
		verr := store.Verify(s)
		if !errors.Is(verr, checkpoint.ErrCorruptCheckpoint) {
			newestIntact = max(newestIntact, s)
			continue
		}
		damaged, why[s] = append(damaged, s), verr
	}
	if standalone && len(damaged) > 0 && len(damaged) == len(steps) {
		last := damaged[len(damaged)-1]
		return nil, fmt.Errorf("%w: every committed checkpoint in %s is damaged (%s; step %d: %w); it was left as it is: move it aside to start the run over from step 0",
			ErrVolume, store.Path(), stepList(damaged), last, why[last])
	}
	reason := "no restart point: the run fetches a holder's copy of this step if it needs it"
	if standalone {
		reason = fmt.Sprintf("no restart point: the trainer resumes from its newest intact checkpoint, step %d", newestIntact)
	}
	var done []int64
	for _, s := range damaged {
		if err := store.Uncommit(s); err != nil {
			return done, fmt.Errorf("trainer: uncommit damaged checkpoint %d: %w", s, err)
		}
		done = append(done, s)
		log.Warn(MsgUncommittedDamaged, "step", s, "err", why[s].Error(), "why", reason)
	}
	return done, nil
}

// stepList names steps for a line: "step 4" or "steps 4, 8".
func stepList(steps []int64) string {
	if len(steps) == 1 {
		return fmt.Sprintf("step %d", steps[0])
	}
	s := "steps "
	for i, st := range steps {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprint(st)
	}
	return s
}
