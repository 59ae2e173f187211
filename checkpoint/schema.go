package checkpoint

import "encoding/binary"

// The bbolt file layout. Every bucket and key the package reads or writes is listed here.
//
//	meta/                         bucket
//	    "format"                  uint32 big-endian: FormatVersion of the writer that created the file
//	checkpoints/                  bucket, one nested bucket per checkpoint
//	    <step, 8 bytes BE>/       one checkpoint, written by exactly one write transaction
//	        "header"              api.CheckpointHeader (protobuf): metadata, tensor index,
//	                              optimizer step, RNG state, data cursor, arena lengths, sha256
//	        params/               bucket: <chunk index, 4 bytes BE> -> little-endian float32 bytes
//	        ema/                  same layout, the EMA weights
//	        adam_m/               same layout, Adam's first moment
//	        adam_v/               same layout, Adam's second moment
//	committed/                    bucket
//	    <step, 8 bytes BE>        32-byte sha256 of a checkpoint the coordinator committed
//
// Chunks hold at most Options.ChunkBytes (<= MaxChunkBytes) bytes each and are numbered from 0
// without gaps; concatenated in key order they are the arena. Step keys are big-endian so that a
// cursor walks checkpoints in step order.
var (
	bucketMeta        = []byte("meta")
	bucketCheckpoints = []byte("checkpoints")
	bucketCommitted   = []byte("committed")

	keyFormat = []byte("format")
	keyHeader = []byte("header")

	// arenaNames are the arena buckets in canonical order (params, ema, adam_m, adam_v); the
	// index is the arena number used in the hash and in the transfer protocol.
	arenaNames = [numArenas][]byte{[]byte("params"), []byte("ema"), []byte("adam_m"), []byte("adam_v")}
)

const numArenas = 4

// stepKey encodes a (non-negative) step as 8 bytes big-endian.
func stepKey(step int64) []byte {
	if step < 0 {
		panic("checkpoint: negative step")
	}
	return binary.BigEndian.AppendUint64(nil, uint64(step))
}

// keyStep decodes a step key; ok is false when k is not 8 bytes.
func keyStep(k []byte) (int64, bool) {
	if len(k) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(k)), true
}

func chunkKey(i int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(i)) }
