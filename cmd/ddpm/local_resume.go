package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"ddpm/checkpoint"
	"ddpm/trainer"
)

// resumeLine is the line `ddpm local --resume RUN` prints before it starts any process: the
// step the run continues from, read (read-only, before the trainers hold their volumes) from
// the trainer volume with the newest committed checkpoint (trainer.CheckpointFileIn's choice):
//
//	ddpm local: resuming runs/a from committed checkpoint at step 400 (trainer-1)
//	ddpm local: resuming runs/a from step 0: no committed checkpoint yet
//
// A volume that cannot be read is named with the reason; the trainers report it too.
func resumeLine(out string) string {
	file, err := trainer.CheckpointFileIn(out)
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	name := filepath.Base(filepath.Dir(file))
	if _, err := os.Stat(file); err != nil {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	st, err := checkpoint.Open(file, checkpoint.Options{ReadOnly: true})
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s: cannot read %s's checkpoints: %v", out, name, err)
	}
	defer st.Close()
	steps, err := st.Committed()
	if err != nil {
		return fmt.Sprintf("ddpm local: resuming %s: cannot read %s's checkpoints: %v", out, name, err)
	}
	if len(steps) == 0 {
		return fmt.Sprintf("ddpm local: resuming %s from step 0: no committed checkpoint yet", out)
	}
	return fmt.Sprintf("ddpm local: resuming %s from committed checkpoint at step %d (%s)", out, slices.Max(steps), name)
}
