package checkpoint

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ddpm/api"
)

// transferMsgBytes bounds the arena bytes in one stream message.
const transferMsgBytes = 1 << 20

// transferRecvBytes is the receive limit a downloading client sets on purpose: one chunk of
// transferMsgBytes plus framing, or one header (its tensor table: well under a MiB for every
// preset).
const transferRecvBytes = 4 << 20

// MaxTransferBytes bounds the arena bytes (4 bytes per element, all four arenas) a Download
// accepts from a peer's header before it allocates anything: the largest preset (LSUN 256,
// 114M parameters) needs 1.8 GB; a header asking for more is refused with ErrTransfer, so a peer
// cannot make a node allocate up to checkHeader's own bound (4 x 16 GiB).
const MaxTransferBytes = 4 << 30

type transferServer struct {
	api.UnimplementedCheckpointTransferServer
	st *Store
}

// RegisterTransfer registers the CheckpointTransfer service, serving st's committed
// checkpoints, on s (the trainer's one gRPC server). Each ≤ 16 MiB chunk is copied out in its
// own short read transaction, so a slow peer never holds the file; a checkpoint pruned or
// replaced mid-stream ends the stream with NotFound.
func RegisterTransfer(s *grpc.Server, st *Store) {
	api.RegisterCheckpointTransferServer(s, &transferServer{st: st})
}

func (t *transferServer) Fetch(req *api.CheckpointFetchRequest, stream grpc.ServerStreamingServer[api.CheckpointFetchResponse]) error {
	st, step := t.st, req.GetStep()
	if step < 0 {
		return status.Errorf(codes.InvalidArgument, "checkpoint: negative step %d", step)
	}
	key := stepKey(step)
	var h *api.CheckpointHeader
	var raw []byte
	err := st.view(fmt.Sprintf("step %d", step), func(tx *bolt.Tx) error {
		if cm := tx.Bucket(bucketCommitted); cm == nil || cm.Get(key) == nil {
			return fmt.Errorf("checkpoint: %s step %d is not committed: %w", st.path, step, ErrNotFound)
		}
		var cb *bolt.Bucket
		var err error
		if h, cb, err = st.loadHeader(tx, step); err != nil {
			return err
		}
		raw = bytes.Clone(cb.Get(keyHeader))
		return nil
	})
	if err != nil {
		return toStatus(err)
	}
	if err := stream.Send(&api.CheckpointFetchResponse{Part: &api.CheckpointFetchResponse_Header{Header: h}}); err != nil {
		return err
	}
	for i, name := range arenaNames {
		off := 0
		for j := 0; ; j++ {
			var chunk []byte
			err := st.view(fmt.Sprintf("step %d", step), func(tx *bolt.Tx) error {
				var cb *bolt.Bucket
				if root := tx.Bucket(bucketCheckpoints); root != nil {
					cb = root.Bucket(key)
				}
				if cb == nil || !bytes.Equal(cb.Get(keyHeader), raw) {
					return fmt.Errorf("checkpoint: %s step %d was pruned or replaced during the transfer: %w", st.path, step, ErrNotFound)
				}
				ab := cb.Bucket(name)
				if ab == nil {
					return st.corrupt(step, "missing bucket %s", name)
				}
				chunk = bytes.Clone(ab.Get(chunkKey(j)))
				return nil
			})
			if err != nil {
				return toStatus(err)
			}
			if chunk == nil {
				break
			}
			for len(chunk) > 0 {
				n := min(len(chunk), transferMsgBytes)
				msg := &api.CheckpointChunk{Arena: uint32(i), Offset: uint64(off), Data: chunk[:n]}
				if err := stream.Send(&api.CheckpointFetchResponse{Part: &api.CheckpointFetchResponse_Chunk{Chunk: msg}}); err != nil {
					return err
				}
				off += n
				chunk = chunk[n:]
			}
		}
		if uint64(off) != 4*h.ArenaLen[i] {
			return toStatus(st.corrupt(step, "bucket %s holds %d bytes, the header says %d", name, off, 4*h.ArenaLen[i]))
		}
	}
	return nil
}

// toStatus maps the package's errors onto gRPC codes (fromStatus maps them back).
func toStatus(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrCorruptCheckpoint):
		return status.Error(codes.DataLoss, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

func fromStatus(addr string, step int64, err error) error {
	s, _ := status.FromError(err)
	// The peer's message ends with the sentinel's text (toStatus): %w adds it back once.
	switch s.Code() {
	case codes.NotFound:
		return fmt.Errorf("checkpoint: peer %s: %s: %w", addr, strings.TrimSuffix(s.Message(), ": "+ErrNotFound.Error()), ErrNotFound)
	case codes.DataLoss:
		return fmt.Errorf("checkpoint: peer %s: %s: %w", addr, strings.TrimSuffix(s.Message(), ": "+ErrCorruptCheckpoint.Error()), ErrCorruptCheckpoint)
	default:
		return fmt.Errorf("checkpoint: fetch step %d from %s: %w: %w", step, addr, ErrTransfer, err)
	}
}

// Download streams committed checkpoint step from the CheckpointTransfer service at addr and
// returns it after checking every byte against the header's sha256 (ErrCorruptCheckpoint if
// they differ; ErrNotFound if the peer has no such committed checkpoint; ErrTransfer for
// connection and protocol failures, a header asking for more than MaxTransferBytes). dialOpts
// must choose the transport (tlsauth's Bundle.DialOptions; plain text only through an Insecure
// Bundle): without them the dial fails. It keeps the whole checkpoint in memory (572 MB for the
// cifar10 preset).
func Download(ctx context.Context, addr string, step int64, dialOpts ...grpc.DialOption) (*Checkpoint, error) {
	opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(transferRecvBytes))}, dialOpts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: dial %s: %w: %w", addr, ErrTransfer, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.NewCheckpointTransferClient(conn).Fetch(ctx, &api.CheckpointFetchRequest{Step: step})
	if err != nil {
		return nil, fromStatus(addr, step, err)
	}
	protocol := func(format string, args ...any) error {
		return fmt.Errorf("checkpoint: fetch step %d from %s: %s: %w", step, addr, fmt.Sprintf(format, args...), ErrTransfer)
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, fromStatus(addr, step, err)
	}
	h := first.GetHeader()
	if h == nil {
		return nil, protocol("first message is not a header")
	}
	if err := checkHeader(h); err != nil {
		return nil, protocol("header: %v", err)
	}
	if h.Step != step || len(h.Sha256) != sha256.Size {
		return nil, protocol("header names step %d, sha256 of %d bytes", h.Step, len(h.Sha256))
	}
	var total uint64
	for _, n := range h.ArenaLen { // each at most MaxArenaLen (checkHeader): no overflow
		total += 4 * n
	}
	if total > MaxTransferBytes {
		return nil, protocol("header asks for %d bytes of arenas, more than the %d this node accepts", total, uint64(MaxTransferBytes))
	}
	c := fromHeader(h)
	arenas := c.arenas()
	var digests [numArenas]hash.Hash
	var pos [numArenas]int
	for i := range digests {
		digests[i] = sha256.New()
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fromStatus(addr, step, err)
		}
		ch := msg.GetChunk()
		if ch == nil {
			return nil, protocol("a second header")
		}
		a := int(ch.Arena)
		if a >= numArenas || ch.Offset != uint64(pos[a]) || len(ch.Data)%4 != 0 || pos[a]+len(ch.Data) > 4*len(arenas[a]) {
			return nil, protocol("chunk of %d bytes for arena %d at %d (expected offset %d)", len(ch.Data), ch.Arena, ch.Offset, pos[min(a, numArenas-1)])
		}
		digests[a].Write(ch.Data)
		decodeLE(arenas[a], pos[a], ch.Data)
		pos[a] += len(ch.Data)
	}
	var sums [numArenas][32]byte
	for i := range digests {
		if pos[i] != 4*len(arenas[i]) {
			return nil, protocol("arena %s ended after %d of %d bytes", arenaNames[i], pos[i], 4*len(arenas[i]))
		}
		digests[i].Sum(sums[i][:0])
	}
	if got := bodySum(h, &sums); !bytes.Equal(got[:], h.Sha256) {
		return nil, fmt.Errorf("checkpoint: step %d from %s hashes to sha256 %x, its header says %x: %w", step, addr, got, h.Sha256, ErrCorruptCheckpoint)
	}
	return c, nil
}

// Fetch downloads committed checkpoint step from the peer at addr (see Download), then saves
// it into dst and marks it committed there. Nothing is written to dst unless the sha256 matches.
// It takes whatever intact copy the peer holds as committed: a caller that knows the sha256 the
// cluster committed uses FetchCommitted.
func Fetch(ctx context.Context, addr string, step int64, dst *Store, dialOpts ...grpc.DialOption) error {
	return FetchCommitted(ctx, addr, step, "", dst, dialOpts...)
}

// FetchCommitted is Fetch of the copy that hashes to sha256Hex (lower-case hex; "" accepts any
// intact copy): a peer serving another copy of the step, intact but not the committed bytes, is
// refused with ErrConflict before anything is written to dst, so dst never records as
// committed what the cluster did not commit.
func FetchCommitted(ctx context.Context, addr string, step int64, sha256Hex string, dst *Store, dialOpts ...grpc.DialOption) error {
	c, err := Download(ctx, addr, step, dialOpts...)
	if err != nil {
		return err
	}
	if sha256Hex != "" && c.SHA256 != sha256Hex {
		return fmt.Errorf("checkpoint: peer %s serves step %d with sha256 %.12s, the committed one is %.12s: %w", addr, step, c.SHA256, sha256Hex, ErrConflict)
	}
	sum, err := dst.Save(c)
	if err != nil {
		return err
	}
	if sum != c.SHA256 {
		panic("checkpoint: Fetch: the saved checkpoint hashes differently from the verified transfer")
	}
	return dst.MarkCommitted(step)
}
