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
	steps, err := store.Committed()
	if err != nil {
		return nil, fmt.Errorf("trainer: verify committed checkpoints: %w", err)
	}
	var done []int64
	for _, s := range steps {
		verr := store.Verify(s)
		if !errors.Is(verr, checkpoint.ErrCorruptCheckpoint) {
			continue
		}
		if err := store.Uncommit(s); err != nil {
			return done, fmt.Errorf("trainer: uncommit damaged checkpoint %d: %w", s, err)
		}
		done = append(done, s)
		log.Warn(MsgUncommittedDamaged, "step", s, "err", verr.Error(),
			"why", "no restart point: the run fetches a holder's copy of this step if it needs it")
	}
	return done, nil
}
