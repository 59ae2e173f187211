package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"testing"

	"ddpm/checkpoint"
)

// TestCheckpointListStateHash: the README promises that a run ends bit-identical however often
// it is interrupted, but the only hash list showed, the sha256 the ranks commit by, covers the
// generation and so differs between a run and the same run resumed. list and verify now show
// the state hash too: two real checkpoint files holding one state saved by generations 1 and
// 3 list two sha256 and one STATE, and verify prints the state hash in full.
func TestCheckpointListStateHash(t *testing.T) {
	dir := t.TempDir()
	var shas []string
	var files []string
	for _, gen := range []uint64{1, 3} {
		c := fetchCkpt("run-a-0123456789", 50, 0.25)
		c.Generation = gen
		c.AdamM, c.AdamV = c.Params, c.Params
		c.RNG, c.Cursor, c.OptStep = []byte{1, 2, 3}, 6400, 50
		file := filepath.Join(dir, fmt.Sprintf("gen%d.db", gen))
		st, err := checkpoint.Open(file, checkpoint.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sha, err := st.Save(c)
		if err == nil {
			err = st.MarkCommitted(50)
		}
		st.Close()
		if err != nil {
			t.Fatal(err)
		}
		shas, files = append(shas, sha), append(files, file)
	}
	c := fetchCkpt("run-a-0123456789", 50, 0.25)
	c.AdamM, c.AdamV = c.Params, c.Params
	c.RNG, c.Cursor, c.OptStep = []byte{1, 2, 3}, 6400, 50
	state := checkpoint.StateHash(c)
	if shas[0] == shas[1] {
		t.Fatalf("generations 1 and 3 saved with one sha256 %s", shas[0])
	}
	for i, gen := range []int{1, 3} {
		args := []string{"checkpoint", "list", files[i]}
		out, err := runCLI(t, context.Background(), nil, args...)
		want := regexp.MustCompile(fmt.Sprintf(`^STEP +GENERATION +COMMITTED +MODEL +SIZE +SHA256 +STATE\n50 +%d +true +tiny +256 B +%s +%s\n$`, gen, shas[i][:16], state[:16]))
		if err != nil || !want.MatchString(out) {
			t.Errorf("ddpm %v: %v\n%s\nwant %s", args, err, out, want)
		}
		args = []string{"checkpoint", "verify", files[i]}
		out, err = runCLI(t, context.Background(), nil, args...)
		if wantOut := fmt.Sprintf("step 50: ok, state %s\n%s: 1 checkpoint verified\n", state, files[i]); err != nil || out != wantOut {
			t.Errorf("ddpm %v: %v\n%q\nwant %q", args, err, out, wantOut)
		}
	}
}
