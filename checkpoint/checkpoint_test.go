package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"ddpm/internal/rng"
)

// testState builds a deterministic checkpoint for step with n parameters: every arena holds
// arbitrary bit patterns (NaNs with payloads, infinities, -0, subnormals), so a round trip
// that goes through float arithmetic anywhere fails.
func testState(step int64, n int) *Checkpoint {
	src := rng.New(uint64(step)+1, 7)
	arena := func() []float32 {
		a := make([]float32, n)
		for i := range a {
			a[i] = math.Float32frombits(src.Uint32())
		}
		return a
	}
	half := n / 2
	return &Checkpoint{
		Step:               step,
		Generation:         uint64(step%5 + 1),
		ConfigHash:         "cfg-" + hex.EncodeToString([]byte{byte(step)}),
		DatasetFingerprint: "mnist-train-60000",
		Preset:             "tiny",
		Tensors: []TensorInfo{
			{Name: "conv_in.weight", Shape: []int{half}, Offset: 0, Len: half},
			{Name: "conv_in.bias", Shape: []int{1, n - half}, Offset: half, Len: n - half},
		},
		Params: arena(), EMA: arena(), AdamM: arena(), AdamV: arena(),
		OptStep: step * 3,
		RNG:     []byte{byte(step), 1, 2, 3, 0xff},
		Cursor:  uint64(step) * 128,
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// assertSame fails unless got holds exactly want's state.
func assertSame(t *testing.T, got, want *Checkpoint) {
	t.Helper()
	if got.Step != want.Step || got.Generation != want.Generation || got.ConfigHash != want.ConfigHash ||
		got.DatasetFingerprint != want.DatasetFingerprint || got.Preset != want.Preset ||
		got.OptStep != want.OptStep || !bytes.Equal(got.RNG, want.RNG) || got.Cursor != want.Cursor {
		t.Fatalf("scalar fields differ:\n got %+v\nwant %+v", *got, *want)
	}
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("tensors: got %d, want %d", len(got.Tensors), len(want.Tensors))
	}
	for i := range want.Tensors {
		g, w := got.Tensors[i], want.Tensors[i]
		if g.Name != w.Name || !slices.Equal(g.Shape, w.Shape) || g.Offset != w.Offset || g.Len != w.Len {
			t.Fatalf("tensor %d: got %+v, want %+v", i, g, w)
		}
	}
	ga, wa := got.arenas(), want.arenas()
	for i := range wa {
		if !sameBits(ga[i], wa[i]) {
			t.Fatalf("arena %s differs", arenaNames[i])
		}
	}
}

func openT(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func saveT(t *testing.T, s *Store, c *Checkpoint) string {
	t.Helper()
	sum, err := s.Save(c)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestRoundTripBitwise(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ckpt.db")
	// Small chunks: each arena spans several chunks and ends with a partial one.
	s := openT(t, path, Options{ChunkBytes: 4096})
	want := testState(42, 5000)
	sum := saveT(t, s, want)
	got, err := s.Get(42)
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)
	if got.SHA256 != sum {
		t.Fatalf("Get sha256 %s, Save returned %s", got.SHA256, sum)
	}
	s.Close()

	// After reopening (read-only), the same bytes.
	r := openT(t, path, Options{ReadOnly: true})
	got, err = r.Get(42)
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, got, want)

	// The hash names the state, not the file: another chunk size, another file, same sha256.
	other := openT(t, filepath.Join(dir, "other.db"), Options{})
	if sum2 := saveT(t, other, want); sum2 != sum {
		t.Fatalf("same state, different chunking: sha256 %s vs %s", sum2, sum)
	}
	// Any field change changes it.
	mod := *want
	mod.Cursor++
	if sum3 := saveT(t, other, &mod); sum3 == sum {
		t.Fatal("changing the cursor did not change the sha256")
	}
}

// TestCanonicalHash rebuilds the canonical encoding of codec.go by hand for a tiny checkpoint,
// so that a change to the encoding (which must stay identical across ranks and builds) fails.
func TestCanonicalHash(t *testing.T) {
	c := &Checkpoint{
		Step: 7, Generation: 2, ConfigHash: "c", DatasetFingerprint: "d", Preset: "p",
		Tensors: []TensorInfo{{Name: "w", Shape: []int{2}, Offset: 0, Len: 2}},
		Params:  []float32{1, -2}, EMA: []float32{0.5, 0}, AdamM: nil, AdamV: []float32{3, 4},
		OptStep: 7, RNG: []byte{9}, Cursor: 11,
	}
	var b []byte
	be32 := func(x uint32) { b = binary.BigEndian.AppendUint32(b, x) }
	be64 := func(x uint64) { b = binary.BigEndian.AppendUint64(b, x) }
	str := func(s string) { be32(uint32(len(s))); b = append(b, s...) }
	b = append(b, "ddpm-checkpoint\x00"...)
	be32(1)
	be64(7)
	be64(2)
	str("c")
	str("d")
	str("p")
	be32(1)
	str("w")
	be32(1)
	be64(2)
	be64(0)
	be64(2)
	be64(7)
	str("\x09")
	be64(11)
	be32(4)
	be64(2)
	be64(2)
	be64(0)
	be64(2)
	le := func(v ...float32) []byte {
		var o []byte
		for _, x := range v {
			o = binary.LittleEndian.AppendUint32(o, math.Float32bits(x))
		}
		return o
	}
	for _, a := range [][]byte{le(1, -2), le(0.5, 0), nil, le(3, 4)} {
		s := sha256.Sum256(a)
		b = append(b, s[:]...)
	}
	want := sha256.Sum256(b)
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	if got := saveT(t, s, c); got != hex.EncodeToString(want[:]) {
		t.Fatalf("sha256 %s, hand-built canonical encoding gives %x", got, want)
	}
}

func TestListLatestCommitted(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	if _, err := s.Latest(); !errors.Is(err, ErrNotFound) {
		t.Fatalf("empty store: Latest err %v, want ErrNotFound", err)
	}
	sums := map[int64]string{}
	for _, step := range []int64{300, 100, 200} {
		sums[step] = saveT(t, s, testState(step, 64))
	}
	if err := s.MarkCommitted(100); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCommitted(200); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCommitted(999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("MarkCommitted(999): %v, want ErrNotFound", err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, in := range list {
		steps = append(steps, in.Step)
		if in.SHA256 != sums[in.Step] || in.Bytes != 4*4*64 || in.Preset != "tiny" || in.Err != nil ||
			!bytes.Equal(in.RNG, testState(in.Step, 64).RNG) {
			t.Fatalf("List entry %+v", in)
		}
		if in.Committed != (in.Step != 300) {
			t.Fatalf("step %d committed=%v", in.Step, in.Committed)
		}
	}
	if !slices.Equal(steps, []int64{100, 200, 300}) {
		t.Fatalf("List steps %v, want big-endian key order 100 200 300", steps)
	}
	if c, err := s.Latest(); err != nil || c.Step != 300 {
		t.Fatalf("Latest: %v %v", c, err)
	}
	if c, err := s.LatestCommitted(); err != nil || c.Step != 200 {
		t.Fatalf("LatestCommitted: %v %v", c, err)
	}
	if got, _ := s.Committed(); !slices.Equal(got, []int64{100, 200}) {
		t.Fatalf("Committed %v", got)
	}
	// Re-saving a committed step: same state is a no-op, a different one is ErrConflict.
	if sum := saveT(t, s, testState(200, 64)); sum != sums[200] {
		t.Fatal("idempotent save changed the sha256")
	}
	changed := testState(200, 64)
	changed.Params[0] = 12345
	if _, err := s.Save(changed); !errors.Is(err, ErrConflict) {
		t.Fatalf("overwriting a committed step: %v, want ErrConflict", err)
	}
	// An uncommitted step is replaced.
	changed.Step = 300
	sum := saveT(t, s, changed)
	if c, err := s.Get(300); err != nil || c.SHA256 != sum || c.Params[0] != 12345 {
		t.Fatalf("replaced step 300: %v", err)
	}
}

func TestSavePanicsOnInconsistentState(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	for name, mutate := range map[string]func(c *Checkpoint){
		"short ema":      func(c *Checkpoint) { c.EMA = c.EMA[:3] },
		"tensor outside": func(c *Checkpoint) { c.Tensors[1].Len++ },
		"bad shape":      func(c *Checkpoint) { c.Tensors[0].Shape = []int{3} },
		"repeated name":  func(c *Checkpoint) { c.Tensors[1].Name = c.Tensors[0].Name },
		"negative step":  func(c *Checkpoint) { c.Step = -1 },
	} {
		c := testState(1, 16)
		mutate(c)
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.HasPrefix(r.(string), "checkpoint: ") {
					t.Errorf("%s: recovered %v, want a checkpoint: panic", name, r)
				}
			}()
			s.Save(c)
		}()
	}
}

func TestReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	if _, err := Open(path, Options{ReadOnly: true}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open of a missing file: %v", err)
	}
	w := openT(t, path, Options{})
	saveT(t, w, testState(1, 8))
	w.Close()
	r := openT(t, path, Options{ReadOnly: true})
	if _, err := r.Save(testState(2, 8)); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Save on read-only: %v", err)
	}
	if err := r.Verify(1); err != nil {
		t.Fatal(err)
	}
}

// findAndFlip flips one byte of the file inside the first occurrence of needle.
func findAndFlip(t *testing.T, path string, needle []byte, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, needle)
	if i < 0 || bytes.Index(b[i+1:], needle) >= 0 {
		t.Fatal("needle not found exactly once in the file")
	}
	b[i+at] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestFlippedByteDetectedAndSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{ChunkBytes: 1024})
	for _, step := range []int64{10, 20, 30} {
		saveT(t, s, testState(step, 1000))
	}
	s.Close()
	// Flip a byte in the middle of step 30's Adam v arena, located by its contents.
	v := leBytes(testState(30, 1000).AdamV)
	findAndFlip(t, path, v[1100:1164], 17) // inside one 1024-byte chunk

	r := openT(t, path, Options{ReadOnly: true})
	err := r.Verify(30)
	if !errors.Is(err, ErrCorruptCheckpoint) || !strings.Contains(err.Error(), "step 30") {
		t.Fatalf("Verify(30) = %v, want ErrCorruptCheckpoint naming step 30", err)
	}
	if _, err := r.Get(30); !errors.Is(err, ErrCorruptCheckpoint) {
		t.Fatalf("Get(30) = %v", err)
	}
	if _, err := r.Latest(); !errors.Is(err, ErrCorruptCheckpoint) {
		t.Fatalf("Latest = %v, want the corruption, not a fallback", err)
	}
	c, err := r.LatestVerified()
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, c, testState(20, 1000))
	if err := r.Verify(20); err != nil {
		t.Fatal(err)
	}
}

func TestHeaderFlipDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{})
	saveT(t, s, testState(1, 100))
	c := testState(2, 100)
	c.DatasetFingerprint = "a-unique-fingerprint-to-find"
	saveT(t, s, c)
	s.Close()
	findAndFlip(t, path, []byte("a-unique-fingerprint-to-find"), 3)
	r := openT(t, path, Options{ReadOnly: true})
	if err := r.Verify(2); !errors.Is(err, ErrCorruptCheckpoint) {
		t.Fatalf("Verify(2) after a header flip: %v", err)
	}
	if c, err := r.LatestVerified(); err != nil || c.Step != 1 {
		t.Fatalf("LatestVerified: %v, %v", c, err)
	}
}

func TestMissingBucketDetectedAndSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{})
	for _, step := range []int64{1, 2} {
		saveT(t, s, testState(step, 300))
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// Remove step 2's ema bucket behind the package's back.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCheckpoints).Bucket(stepKey(2)).DeleteBucket([]byte("ema"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	r := openT(t, path, Options{})
	err = r.Verify(2)
	if !errors.Is(err, ErrCorruptCheckpoint) || !strings.Contains(err.Error(), "step 2: missing bucket ema") {
		t.Fatalf("Verify(2) = %v", err)
	}
	c, err := r.LatestCommitted()
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, c, testState(1, 300))
}

func TestTruncatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{ChunkBytes: 1 << 16})
	saveT(t, s, testState(1, 1000))
	saveT(t, s, testState(2, 1000))
	saveT(t, s, testState(3, 200_000)) // 3.2 MB: the file's tail is this checkpoint's pages
	s.Close()
	// Cut 1 MiB below bbolt's high-water mark (the file may extend past it, preallocated).
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var hwm int64
	db.View(func(tx *bolt.Tx) error { hwm = tx.Size(); return nil })
	db.Close()
	if err := os.Truncate(path, hwm-1<<20); err != nil {
		t.Fatal(err)
	}
	// A writer refuses the file, naming the truncation.
	if _, err := Open(path, Options{}); !errors.Is(err, ErrCorruptCheckpoint) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("read-write Open of a truncated file: %v", err)
	}
	// A reader can open it; whatever it reads is either exact or ErrCorruptCheckpoint naming
	// the truncation, never a crash (pages past the end fault in the mmap). Here the cut took
	// the newest transaction's root page, so nothing is reachable through the file's metadata.
	r := openT(t, path, Options{ReadOnly: true})
	for _, step := range []int64{1, 2, 3} {
		err = r.Verify(step)
		if err == nil {
			c, err := r.Get(step)
			if err != nil {
				t.Fatal(err)
			}
			assertSame(t, c, testState(step, len(c.Params)))
			continue
		}
		if !errors.Is(err, ErrCorruptCheckpoint) || !strings.Contains(err.Error(), "truncated") {
			t.Fatalf("Verify(%d) = %v, want ErrCorruptCheckpoint naming the truncation", step, err)
		}
		if step == 1 {
			t.Logf("Verify(1): %v", err)
		}
	}
	if _, err := r.LatestVerified(); !errors.Is(err, ErrCorruptCheckpoint) && !errors.Is(err, ErrNotFound) {
		t.Fatalf("LatestVerified on a truncated file: %v", err)
	}
}

func TestGarbageFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 2000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		if _, err := Open(path, Options{ReadOnly: ro}); !errors.Is(err, ErrCorruptCheckpoint) {
			t.Fatalf("Open(readOnly=%v) of garbage: %v", ro, err)
		}
	}
}

func TestPruneKeepsExactlyTheRightSteps(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.db"), Options{})
	for step := int64(100); step <= 1200; step += 100 {
		saveT(t, s, testState(step, 16))
		if step <= 900 {
			if err := s.MarkCommitted(step); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Uncommitted and older than the newest committed: step 450 (a write that never committed).
	saveT(t, s, testState(450, 16))
	removed, err := s.Prune(3, 400)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := s.List()
	var kept []int64
	for _, in := range list {
		kept = append(kept, in.Step)
	}
	// committed 100..900: newest 3 (700 800 900) + milestones (400 800); pending 1000..1200 all kept.
	if want := []int64{400, 700, 800, 900, 1000, 1100, 1200}; !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v", kept, want)
	}
	if want := []int64{100, 200, 300, 450, 500, 600}; !slices.Equal(removed, want) {
		t.Fatalf("removed %v, want %v", removed, want)
	}
	if got, _ := s.Committed(); !slices.Equal(got, []int64{400, 700, 800, 900}) {
		t.Fatalf("committed after prune %v", got)
	}
	// Pending ones beyond keep go too (oldest first).
	if removed, _ := s.Prune(2, 0); !slices.Equal(removed, []int64{400, 700, 1000}) {
		t.Fatalf("second prune removed %v", removed)
	}
}

func TestPruneBoundsFileSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{ChunkBytes: 1 << 16})
	const n = 50_000 // 800 kB per checkpoint
	one := int64(4 * 4 * n)
	for step := int64(1); step <= 100; step++ {
		saveT(t, s, testState(step, n))
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prune(3, 0); err != nil {
			t.Fatal(err)
		}
	}
	fi, _ := os.Stat(path)
	t.Logf("after 100 checkpoints of %d bytes with keep=3: file %d bytes (%.1fx)", one, fi.Size(), float64(fi.Size())/float64(one))
	if fi.Size() > 8*one {
		t.Fatalf("file %d bytes, more than 8 checkpoints of %d", fi.Size(), one)
	}
	if got, _ := s.Committed(); !slices.Equal(got, []int64{98, 99, 100}) {
		t.Fatalf("committed %v", got)
	}
}

func TestCompact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.db")
	s := openT(t, path, Options{ChunkBytes: 1 << 16})
	const n = 50_000
	var sums []string
	for step := int64(1); step <= 12; step++ {
		sums = append(sums, saveT(t, s, testState(step, n)))
		if err := s.MarkCommitted(step); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Prune(1, 0); err != nil {
		t.Fatal(err)
	}
	// While the store is open, compaction cannot take the file.
	if _, _, err := Compact(path, Options{LockTimeout: 100 * time.Millisecond}); !errors.Is(err, ErrInUse) {
		t.Fatalf("Compact of an open file: %v, want ErrInUse", err)
	}
	s.Close()
	before, after, err := Compact(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compact: %d -> %d bytes", before, after)
	if after*2 > before {
		t.Fatalf("compact: %d -> %d bytes, want at least halved", before, after)
	}
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	r := openT(t, path, Options{ReadOnly: true})
	c, err := r.LatestCommitted()
	if err != nil {
		t.Fatal(err)
	}
	assertSame(t, c, testState(12, n))
	if c.SHA256 != sums[11] {
		t.Fatal("sha256 changed by compaction")
	}
}
