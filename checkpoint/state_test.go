package checkpoint

import (
	"errors"
	"path/filepath"
	"testing"
)

// TestStateHashIgnoresGeneration: the same state saved by generation 1 in one store and by
// generation 4 in another (as an uninterrupted run and the same run resumed three times
// leave it) has two sha256 (the commit hash covers the generation) and one state hash, which
// VerifyState reads back from each real bbolt file and StateHash computes from memory. Any
// change of the state (one parameter bit, the data cursor, the RNG) changes the state hash.
func TestStateHashIgnoresGeneration(t *testing.T) {
	dir := t.TempDir()
	a, b := testState(50, 3000), testState(50, 3000)
	a.Generation, b.Generation = 1, 4
	sa := openT(t, filepath.Join(dir, "uninterrupted.db"), Options{ChunkBytes: 4096})
	sb := openT(t, filepath.Join(dir, "resumed.db"), Options{})
	shaA, shaB := saveT(t, sa, a), saveT(t, sb, b)
	if shaA == shaB {
		t.Fatalf("generations 1 and 4 saved with one sha256 %s; the commit hash must cover the generation", shaA)
	}
	stA, err := sa.VerifyState(50)
	if err != nil {
		t.Fatal(err)
	}
	stB, err := sb.VerifyState(50)
	if err != nil {
		t.Fatal(err)
	}
	if stA != stB || stA != StateHash(a) || len(stA) != 64 {
		t.Fatalf("state hashes: generation 1 %s, generation 4 %s, StateHash %s; want one", stA, stB, StateHash(a))
	}
	if stA == shaA || stA == shaB {
		t.Fatalf("state hash %s equals a sha256", stA)
	}
	for name, change := range map[string]func(c *Checkpoint){
		"a parameter bit": func(c *Checkpoint) { c.Params[7] = -c.Params[7] },
		"an EMA weight":   func(c *Checkpoint) { c.EMA[0]++ },
		"the Adam v":      func(c *Checkpoint) { c.AdamV[2999] = 0 },
		"the cursor":      func(c *Checkpoint) { c.Cursor++ },
		"the RNG":         func(c *Checkpoint) { c.RNG = append([]byte(nil), 9) },
		"the opt step":    func(c *Checkpoint) { c.OptStep++ },
	} {
		c := testState(50, 3000)
		change(c)
		if StateHash(c) == stA {
			t.Errorf("changing %s left the state hash %s", name, stA)
		}
	}
	// A damaged body has no state hash.
	sb.Close()
	findAndFlip(t, filepath.Join(dir, "resumed.db"), leBytes(b.AdamM[100:104]), 1)
	r := openT(t, filepath.Join(dir, "resumed.db"), Options{ReadOnly: true})
	if got, err := r.VerifyState(50); !errors.Is(err, ErrCorruptCheckpoint) || got != "" {
		t.Fatalf("VerifyState of a flipped byte: %q, %v; want ErrCorruptCheckpoint", got, err)
	}
}
