package trainer

import (
	"context"
	"errors"
	"fmt"

	"ddpm/checkpoint"
)

// SoloCoordinator is the Coordinator of a world of one that runs without a coordinator
// (`ddpm trainer --standalone`): one generation, rank 0, starting from the newest committed
// checkpoint in the trainer's own store, and every checkpoint committed as soon as it is saved
// (one rank always agrees with itself).
type SoloCoordinator struct {
	Store *checkpoint.Store
}

// Assignments delivers the single assignment and closes when ctx ends.
func (s SoloCoordinator) Assignments(ctx context.Context) (<-chan Assignment, error) {
	a := Assignment{Generation: 1, Rank: 0, World: 1, Peers: []string{"local"}}
	c, err := s.Store.LatestCommitted()
	switch {
	case err == nil:
		a.StartStep, a.CheckpointSHA = c.Step, c.SHA256
	case !errors.Is(err, checkpoint.ErrNotFound):
		return nil, err
	}
	ch := make(chan Assignment, 1)
	ch <- a
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

// Report does nothing: the progress line in the log is the record.
func (SoloCoordinator) Report(context.Context, Progress) {}

// CheckpointReady commits the checkpoint at once.
func (s SoloCoordinator) CheckpointReady(_ context.Context, _ uint64, step int64, _ string, _ int64) error {
	return s.Store.MarkCommitted(step)
}

// WaitCommitted returns the stored sha256 of a committed step.
func (s SoloCoordinator) WaitCommitted(_ context.Context, step int64) (string, error) {
	c, err := s.Store.Get(step)
	if err != nil {
		return "", err
	}
	if err := s.Store.MarkCommitted(step); err != nil {
		return "", fmt.Errorf("%w: %w", ErrVolume, err)
	}
	return c.SHA256, nil
}

// SoloRing is the RingFunc of a world of one.
func SoloRing(context.Context, Assignment) (Reducer, func(), error) { return Solo{}, func() {}, nil }
