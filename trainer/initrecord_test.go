package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/checkpoint"
	"ddpm/unet"
)

// TestInitRecordTravels: a trainer given --init weights records their sha256 (of the
// little-endian float32 parameters) in its checkpoints; a trainer without --init that restores
// such a checkpoint (one that joined the run later and fetched it) writes the same record, and
// the same state hash, into its own; its Reset (a generation at step 0) goes back to its own
// start, the seed's, which has no record. Before, only the volume of a trainer given --init knew
// of the warm start (init.txt), and `ddpm sample` of a later joiner's volume called its EMA a
// random start.
func TestInitRecordTravels(t *testing.T) {
	run, ds := mnistRun(t, 4)
	file := filepath.Join("..", "demo", "mnist-tiny.safetensors")
	warm, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	if err := warm.InitFrom(file); err != nil {
		t.Fatal(err)
	}
	w := make([]float32, len(warm.Model().Params()))
	if _, err := unet.ReadSafetensors(file, warm.Model().Tensors(), w); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := binary.Write(h, binary.LittleEndian, w); err != nil {
		t.Fatal(err)
	}
	want := hex.EncodeToString(h.Sum(nil))
	if got := InitSHA256(warm.Snapshot(1, "").RNG); got != want {
		t.Fatalf("the warm start's record: %q, want %q", got, want)
	}
	if _, err := warm.Step(context.Background()); err != nil {
		t.Fatal(err)
	}
	fetched := warm.Snapshot(1, "fp")

	late, err := New(run, ds)
	if err != nil {
		t.Fatal(err)
	}
	if got := InitSHA256(late.Snapshot(1, "fp").RNG); got != "" {
		t.Fatalf("a trainer without --init records %q", got)
	}
	if err := late.Restore(fetched); err != nil {
		t.Fatal(err)
	}
	own := late.Snapshot(2, "fp")
	if got := InitSHA256(own.RNG); got != want {
		t.Fatalf("the later joiner's record: %q, want the run's %q", got, want)
	}
	if a, b := checkpoint.StateHash(own), checkpoint.StateHash(fetched); a != b {
		t.Fatalf("the later joiner's state hash %s, the fetched checkpoint's %s", a, b)
	}
	late.Reset()
	if got := late.Snapshot(2, "fp").RNG; got != nil {
		t.Fatalf("after Reset the later joiner records %q, want nothing (its own start is the seed's)", got)
	}

	for _, rng := range []string{"", "x", initRecord, initRecord + strings.Repeat("z", 64), initRecord + want[:63], "init sha256 " + want} {
		if got := InitSHA256([]byte(rng)); got != "" {
			t.Errorf("InitSHA256(%q) = %q, want \"\"", rng, got)
		}
	}
}
