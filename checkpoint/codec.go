package checkpoint

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"ddpm/api"
)

// The canonical encoding that the checkpoint hash covers. It depends only on the training state,
// never on how bbolt laid out its pages, the chunk size, or the clock, so every rank holding the
// same state computes the same sha256 (the coordinator compares them across ranks). All
// integers are big-endian; a string or byte field is a uint32 length followed by its bytes.
//
//	arena_sum[i] = sha256(little-endian float32 bytes of arena i)       i = params, ema, adam_m, adam_v
//	sha256 = sha256( "ddpm-checkpoint\x00" u32 format_version
//	                 i64 step  u64 generation  str config_hash  str dataset_fingerprint  str preset
//	                 u32 n_tensors  { str name  u32 ndim  i64 dim...  i64 offset  i64 len }...
//	                 i64 opt_step  bytes rng  u64 cursor
//	                 u32 4  u64 arena_len[0..3]  arena_sum[0..3] )
//
// The arenas are hashed separately so that the four sums run in parallel (the body of the
// cifar10 preset is 572 MB); the outer hash binds them to the header.
//
// The state hash (StateHash, Store.VerifyState) covers the same fields but the format version
// and the generation, the cluster bookkeeping of which coordinator generation wrote the
// checkpoint: a run interrupted and resumed (a new generation per resume) ends with the same
// state hash as the same run uninterrupted, while their sha256 differ. It is shown to users
// (ddpm checkpoint list / verify) and is no part of the cluster protocol:
//
//	state = sha256( "ddpm-state\x00" i64 step  str config_hash  str dataset_fingerprint  str preset
//	                u32 n_tensors {...}  i64 opt_step  bytes rng  u64 cursor
//	                u32 4  u64 arena_len[0..3]  arena_sum[0..3] )
const hashMagic = "ddpm-checkpoint\x00"

// stateMagic opens the state hash's encoding.
const stateMagic = "ddpm-state\x00"

// FormatVersion is the layout version this package writes. Files with a newer version are
// refused with ErrFormat.
const FormatVersion = 1

// littleEndianHost reports whether float32 slices can be viewed as little-endian bytes as is.
var littleEndianHost = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// viewBytes returns v's memory as bytes (no copy).
func viewBytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// leBytes returns the little-endian encoding of v: v's own memory on little-endian hosts
// (the caller must not modify v while the bytes are in use), a converted copy otherwise.
func leBytes(v []float32) []byte {
	if littleEndianHost {
		return viewBytes(v)
	}
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// decodeLE writes the little-endian float32 bytes b into dst starting at byte offset off.
// It panics if off or len(b) is not a multiple of 4 or the bytes do not fit.
func decodeLE(dst []float32, off int, b []byte) {
	if off%4 != 0 || len(b)%4 != 0 || off+len(b) > 4*len(dst) {
		panic(fmt.Sprintf("checkpoint: decodeLE: %d bytes at %d into %d floats", len(b), off, len(dst)))
	}
	if littleEndianHost {
		copy(viewBytes(dst)[off:], b)
		return
	}
	for i := 0; i < len(b); i += 4 {
		dst[(off+i)/4] = math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
	}
}

// canonicalHeader encodes the hashed header fields of h (everything but chunk_bytes and sha256).
func canonicalHeader(h *api.CheckpointHeader) []byte {
	b := []byte(hashMagic)
	b = binary.BigEndian.AppendUint32(b, h.FormatVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Step))
	b = binary.BigEndian.AppendUint64(b, h.Generation)
	return appendStateFields(b, h)
}

// stateHeader encodes the header fields the state hash covers: canonicalHeader's but the
// format version and the generation.
func stateHeader(h *api.CheckpointHeader) []byte {
	b := []byte(stateMagic)
	b = binary.BigEndian.AppendUint64(b, uint64(h.Step))
	return appendStateFields(b, h)
}

// appendStateFields appends the header fields from config_hash to arena_len (codec above).
func appendStateFields(b []byte, h *api.CheckpointHeader) []byte {
	str := func(s []byte) { b = binary.BigEndian.AppendUint32(b, uint32(len(s))); b = append(b, s...) }
	u64 := func(x uint64) { b = binary.BigEndian.AppendUint64(b, x) }
	str([]byte(h.ConfigHash))
	str([]byte(h.DatasetFingerprint))
	str([]byte(h.Preset))
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.Tensors)))
	for _, t := range h.Tensors {
		str([]byte(t.Name))
		b = binary.BigEndian.AppendUint32(b, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			u64(uint64(d))
		}
		u64(uint64(t.Offset))
		u64(uint64(t.Len))
	}
	u64(uint64(h.OptStep))
	str(h.Rng)
	u64(h.Cursor)
	b = binary.BigEndian.AppendUint32(b, uint32(len(h.ArenaLen)))
	for _, n := range h.ArenaLen {
		u64(n)
	}
	return b
}

// stateSum combines the state fields of h and the four arena sums into the state hash.
func stateSum(h *api.CheckpointHeader, arenaSums *[numArenas][32]byte) [32]byte {
	return headedSum(stateHeader(h), arenaSums)
}

// headedSum is the sha256 of head followed by the four arena sums.
func headedSum(head []byte, arenaSums *[numArenas][32]byte) [32]byte {
	d := sha256.New()
	d.Write(head)
	for _, s := range arenaSums {
		d.Write(s[:])
	}
	var out [32]byte
	d.Sum(out[:0])
	return out
}

// StateHash returns the lower-case hex state hash of c (codec above): the sha256 of what
// determines the rest of its run (step, run-config hash, dataset fingerprint, preset, tensor
// index, parameters, EMA, Adam moments, optimizer step, RNG field, data cursor), without the
// generation that c.SHA256 also covers. The RNG field is the trainer's run record: the run's
// start and the streak of consecutive skipped steps that the run's divergence limit counts
// (trainer.NonFiniteStreak), so two checkpoints of one step that differ only in that streak
// hash apart, as their runs go on differently. It panics if c is inconsistent (as Save does).
func StateHash(c *Checkpoint) string {
	h := headerOf(c, MaxChunkBytes)
	if err := checkHeader(h); err != nil {
		panic("checkpoint: StateHash: " + err.Error())
	}
	var bodies [numArenas][]byte
	for i, a := range c.arenas() {
		bodies[i] = leBytes(a)
	}
	sums := sumArenas(&bodies)
	sum := stateSum(h, &sums)
	return hex.EncodeToString(sum[:])
}

// bodySum combines the header and the four arena sums into the checkpoint's sha256.
func bodySum(h *api.CheckpointHeader, arenaSums *[numArenas][32]byte) [32]byte {
	return headedSum(canonicalHeader(h), arenaSums)
}

// sumArenas hashes the four arenas' little-endian bytes in parallel.
func sumArenas(bodies *[numArenas][]byte) [numArenas][32]byte {
	var sums [numArenas][32]byte
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Go(func() { sums[i] = sha256.Sum256(bodies[i]) })
	}
	wg.Wait()
	return sums
}

// headerOf builds the (unhashed) header of c.
func headerOf(c *Checkpoint, chunkBytes int) *api.CheckpointHeader {
	h := &api.CheckpointHeader{
		FormatVersion:      FormatVersion,
		Step:               c.Step,
		Generation:         c.Generation,
		ConfigHash:         c.ConfigHash,
		DatasetFingerprint: c.DatasetFingerprint,
		Preset:             c.Preset,
		OptStep:            c.OptStep,
		Rng:                c.RNG,
		Cursor:             c.Cursor,
		ChunkBytes:         uint32(chunkBytes),
	}
	for _, t := range c.Tensors {
		shape := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = int64(d)
		}
		h.Tensors = append(h.Tensors, &api.CheckpointTensor{Name: t.Name, Shape: shape, Offset: int64(t.Offset), Len: int64(t.Len)})
	}
	for _, a := range c.arenas() {
		h.ArenaLen = append(h.ArenaLen, uint64(len(a)))
	}
	return h
}

// fromHeader builds a Checkpoint with c's metadata from h and arenas allocated to h's lengths.
func fromHeader(h *api.CheckpointHeader) *Checkpoint {
	c := &Checkpoint{
		Step:               h.Step,
		Generation:         h.Generation,
		ConfigHash:         h.ConfigHash,
		DatasetFingerprint: h.DatasetFingerprint,
		Preset:             h.Preset,
		OptStep:            h.OptStep,
		RNG:                h.Rng,
		Cursor:             h.Cursor,
		SHA256:             hex.EncodeToString(h.Sha256),
	}
	for _, t := range h.Tensors {
		shape := make([]int, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = int(d)
		}
		c.Tensors = append(c.Tensors, TensorInfo{Name: t.Name, Shape: shape, Offset: int(t.Offset), Len: int(t.Len)})
	}
	ar := [numArenas]*[]float32{&c.Params, &c.EMA, &c.AdamM, &c.AdamV}
	for i, p := range ar {
		*p = make([]float32, h.ArenaLen[i])
	}
	return c
}

// MaxArenaLen bounds an arena's element count in a header this package accepts (2^32 floats,
// 16 GiB), so a damaged or hostile header cannot make a reader allocate without bound.
const MaxArenaLen = 1 << 32

// checkHeader reports the first inconsistency in h (nil if none). It is used for headers read
// from disk or from the network and for checkpoints handed to Save.
func checkHeader(h *api.CheckpointHeader) error {
	if h.FormatVersion == 0 || h.FormatVersion > FormatVersion {
		return fmt.Errorf("format version %d, this build reads 1..%d: %w", h.FormatVersion, FormatVersion, ErrFormat)
	}
	if h.Step < 0 {
		return fmt.Errorf("negative step %d", h.Step)
	}
	if len(h.ArenaLen) != numArenas {
		return fmt.Errorf("%d arenas, want %d", len(h.ArenaLen), numArenas)
	}
	np := h.ArenaLen[0]
	for i, n := range h.ArenaLen {
		if n > MaxArenaLen {
			return fmt.Errorf("arena %s has %d elements, more than %d", arenaNames[i], n, uint64(MaxArenaLen))
		}
		if i > 0 && n != 0 && n != np {
			return fmt.Errorf("arena %s has %d elements, params has %d", arenaNames[i], n, np)
		}
	}
	seen := make(map[string]bool, len(h.Tensors))
	for _, t := range h.Tensors {
		if t.Name == "" || seen[t.Name] {
			return fmt.Errorf("tensor name %q empty or repeated", t.Name)
		}
		seen[t.Name] = true
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 || (d > 0 && n > math.MaxInt64/d) {
				return fmt.Errorf("tensor %s: bad shape %v", t.Name, t.Shape)
			}
			n *= d
		}
		if n != t.Len || t.Offset < 0 || t.Len < 0 || uint64(t.Offset)+uint64(t.Len) > np {
			return fmt.Errorf("tensor %s: shape %v, [%d, %d+%d) does not fit params of %d", t.Name, t.Shape, t.Offset, t.Offset, t.Len, np)
		}
	}
	if h.Sha256 != nil && len(h.Sha256) != sha256.Size {
		return fmt.Errorf("sha256 of %d bytes", len(h.Sha256))
	}
	return nil
}
