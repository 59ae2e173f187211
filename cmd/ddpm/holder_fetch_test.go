package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// holderServing starts a real CheckpointTransfer server on a loopback port over a fresh store
// holding one committed checkpoint of step 4 whose parameters are all v (servingCkpts); it
// returns the server's address and the checkpoint's sha256.
func holderServing(t *testing.T, v float32) (string, string) {
	addr, sums := servingCkpts(t, fetchCkpt("run", 4, v))
	return addr, sums[0]
}

// TestHolderFetchKeepsOnlyTheCommittedSHA: a trainer fetching the committed checkpoint of its
// assignment takes it from a holder whose copy hashes to the sha256 the cluster committed. A
// holder serving another copy of the step (intact, but not the committed bytes) is skipped for
// the next holder; the FetchFunc used to ignore the sha256 it is given, so it saved that copy,
// marked it committed on the volume and stopped there: the trainer then refused it, and at
// every later generation fetched it from the same first holder again, never reaching the good
// one. With no holder serving the committed bytes, nothing is marked committed.
func TestHolderFetchKeepsOnlyTheCommittedSHA(t *testing.T) {
	bad, _ := holderServing(t, 1)
	good, want := holderServing(t, 2)
	fetch := holderFetch(tlsauthtest.Insecure(t).DialOptions())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dst, err := checkpoint.Open(filepath.Join(t.TempDir(), "dst.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := fetch(ctx, []string{bad, good}, 4, want, dst); err != nil {
		t.Fatalf("fetch from [bad, good]: %v", err)
	}
	c, err := dst.LatestCommitted()
	if err != nil || c.Step != 4 || c.SHA256 != want {
		if err == nil {
			t.Fatalf("volume's committed checkpoint after the fetch: step %d sha256 %.12s, want step 4 sha256 %.12s", c.Step, c.SHA256, want)
		}
		t.Fatal(err)
	}

	only, err := checkpoint.Open(filepath.Join(t.TempDir(), "only.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer only.Close()
	err = fetch(ctx, []string{bad}, 4, want, only)
	if !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("fetch from [bad] = %v, want ErrConflict", err)
	}
	if steps, err := only.Committed(); err != nil || len(steps) != 0 {
		t.Fatalf("committed steps after a refused fetch: %v %v, want none", steps, err)
	}
}
