// Package safetensors reads and writes the Hugging Face safetensors format, the portable tensor
// file the project exchanges with PyTorch (the parity oracle ../shared/anchors/pytorch/parity.py,
// `ddpm checkpoint export`).
//
// Layout (https://github.com/huggingface/safetensors, "Format"):
//
//	bytes [0, 8)      N, the header length, unsigned 64-bit little-endian
//	bytes [8, 8+N)    a JSON object {name: {"dtype": D, "shape": [d0, d1, ...], "data_offsets": [b, e]}}
//	                  plus an optional "__metadata__": {string: string}; padded with spaces
//	bytes [8+N, end)  the byte buffer; a tensor's data is buffer[b:e], little-endian, row-major
//
// Decode checks everything a hostile file could get wrong (header length, JSON, dtypes, shapes,
// offsets that overlap, leave holes or run past the end, shape*dtype size != byte length) and
// returns an error wrapping one of the sentinels below; it never panics.
package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// Errors returned (wrapped with %w and a description of what and where) by this package.
var (
	// ErrTruncated: the input ends before the header or the byte buffer it announces.
	ErrTruncated = errors.New("safetensors: truncated")
	// ErrHeader: the header is not a valid safetensors JSON header (bad JSON, duplicate or
	// empty names, missing fields, negative sizes, header length over MaxHeaderSize).
	ErrHeader = errors.New("safetensors: malformed header")
	// ErrLayout: data offsets overlap, leave a hole, do not cover the buffer, or do not match
	// shape times dtype size.
	ErrLayout = errors.New("safetensors: bad data layout")
	// ErrDType: a dtype this package does not know, or a conversion the accessor cannot make.
	ErrDType = errors.New("safetensors: unsupported dtype")
	// ErrInvalid: a Tensor handed to Encode/Write is inconsistent (empty or reserved name,
	// duplicate name, len(Data) != product(Shape) * dtype size).
	ErrInvalid = errors.New("safetensors: invalid tensor")
)

// MaxHeaderSize bounds the JSON header Decode accepts (the reference Rust implementation's
// limit, 100 MB), so a hostile length cannot make the reader allocate without bound.
const MaxHeaderSize = 100_000_000

// metadataKey is the reserved header entry holding free-form string metadata.
const metadataKey = "__metadata__"

// dtypeSize maps every dtype of the safetensors specification to its element size in bytes.
// Tensors of any of these round-trip as raw bytes; the typed accessors handle F32, F64, I64, I32.
var dtypeSize = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

// Tensor is one named tensor: DType is a safetensors dtype ("F32", "F64", "I64", "I32", ...),
// Shape its dimensions (PyTorch order, row-major; empty for a scalar), Data its little-endian
// bytes, len(Data) == product(Shape) * size(DType).
type Tensor struct {
	Name  string
	DType string
	Shape []int
	Data  []byte
}

// NumElements is the product of t.Shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// check validates t for encoding: a usable name, a known dtype, non-negative dims and a byte
// length equal to product(Shape) * dtype size.
func (t Tensor) check() error {
	if t.Name == "" || t.Name == metadataKey {
		return fmt.Errorf("%w: name %q is empty or reserved", ErrInvalid, t.Name)
	}
	size, ok := dtypeSize[t.DType]
	if !ok {
		return fmt.Errorf("%w: tensor %q: dtype %q", ErrDType, t.Name, t.DType)
	}
	want, ok := byteLen(t.Shape, size)
	if !ok {
		return fmt.Errorf("%w: tensor %q: shape %v has a negative or overflowing dimension", ErrInvalid, t.Name, t.Shape)
	}
	if uint64(len(t.Data)) != want {
		return fmt.Errorf("%w: tensor %q: %d bytes, shape %v of %s needs %d", ErrInvalid, t.Name, len(t.Data), t.Shape, t.DType, want)
	}
	return nil
}

// byteLen is product(shape) * size, with false on a negative dimension or on overflow past
// math.MaxInt64.
func byteLen[I int | int64](shape []I, size int) (uint64, bool) {
	n := uint64(size)
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		if d == 0 {
			n = 0
			continue
		}
		if n > math.MaxInt64/uint64(d) {
			return 0, false
		}
		n *= uint64(d)
	}
	return n, true
}

// Encode writes ts and meta (nil or empty: no "__metadata__" entry) to w in safetensors format.
// Tensors are laid out in the order given; the header is padded with spaces to a multiple of 8
// bytes so the buffer starts aligned. It returns an error wrapping ErrInvalid or ErrDType for an
// inconsistent tensor (nothing is written then), or the writer's error.
func Encode(w io.Writer, ts []Tensor, meta map[string]string) error {
	header, err := encodeHeader(ts, meta)
	if err != nil {
		return err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, t := range ts {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
}

func encodeHeader(ts []Tensor, meta map[string]string) ([]byte, error) {
	entries := make(map[string]any, len(ts)+1)
	var off uint64
	for _, t := range ts {
		if err := t.check(); err != nil {
			return nil, err
		}
		if _, dup := entries[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate name %q", ErrInvalid, t.Name)
		}
		shape := make([]int64, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = int64(d)
		}
		end := off + uint64(len(t.Data))
		entries[t.Name] = headerEntry{DType: t.DType, Shape: shape, DataOffsets: []uint64{off, end}}
		off = end
	}
	if len(meta) > 0 {
		entries[metadataKey] = meta
	}
	h, err := json.Marshal(entries) // map keys come out sorted: the header is deterministic
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if pad := (8 - len(h)%8) % 8; pad > 0 {
		h = append(h, bytes.Repeat([]byte{' '}, pad)...)
	}
	return h, nil
}

// Write encodes ts and meta into path atomically: it writes path+".tmp", fsyncs it, renames it
// over path and fsyncs the directory, so path holds either the old or the complete new file.
func Write(path string, ts []Tensor, meta map[string]string) (err error) {
	if _, err := encodeHeader(ts, meta); err != nil { // validate before touching the disk
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = Encode(bw, ts, meta); err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", tmp, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: writing %s: %w", tmp, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("safetensors: syncing %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("safetensors: closing %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		d.Sync() // best effort: some filesystems refuse to sync a directory
		d.Close()
	}
	return nil
}

// Read reads and decodes the safetensors file at path (see Decode). The returned tensors' Data
// alias one buffer holding the whole file.
func Read(path string) ([]Tensor, map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	ts, meta, err := Decode(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, meta, nil
}

// Decode parses a whole safetensors file held in b. Tensors come back in buffer order (by data
// offset; zero-size tensors by name among equals); their Data alias b (no copy). meta is nil
// when the file has no "__metadata__". Errors wrap ErrTruncated, ErrHeader, ErrLayout or ErrDType.
func Decode(b []byte) ([]Tensor, map[string]string, error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("%w: %d bytes, the header length alone needs 8", ErrTruncated, len(b))
	}
	n := binary.LittleEndian.Uint64(b[:8])
	if n > MaxHeaderSize {
		return nil, nil, fmt.Errorf("%w: header length %d exceeds the limit %d", ErrHeader, n, MaxHeaderSize)
	}
	if n > uint64(len(b)-8) {
		return nil, nil, fmt.Errorf("%w: header length %d, only %d bytes follow", ErrTruncated, n, len(b)-8)
	}
	hdr, body := b[8:8+n], b[8+n:]
	if len(hdr) < 2 || hdr[0] != '{' {
		return nil, nil, fmt.Errorf("%w: header does not start with a JSON object", ErrHeader)
	}
	raw, err := splitObject(hdr)
	if err != nil {
		return nil, nil, err
	}
	var meta map[string]string
	ts := make([]Tensor, 0, len(raw))
	offs := make([][2]uint64, 0, len(raw))
	for _, kv := range raw {
		if kv.name == metadataKey {
			if err := json.Unmarshal(kv.value, &meta); err != nil {
				return nil, nil, fmt.Errorf("%w: __metadata__ is not an object of strings: %v", ErrHeader, err)
			}
			continue
		}
		if kv.name == "" {
			return nil, nil, fmt.Errorf("%w: empty tensor name", ErrHeader)
		}
		var e headerEntry
		if err := json.Unmarshal(kv.value, &e); err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrHeader, kv.name, err)
		}
		size, ok := dtypeSize[e.DType]
		if !ok {
			return nil, nil, fmt.Errorf("%w: tensor %q: dtype %q", ErrDType, kv.name, e.DType)
		}
		if e.Shape == nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: no shape", ErrHeader, kv.name)
		}
		if len(e.DataOffsets) != 2 {
			return nil, nil, fmt.Errorf("%w: tensor %q: data_offsets has %d values, want 2", ErrHeader, kv.name, len(e.DataOffsets))
		}
		want, ok := byteLen(e.Shape, size)
		if !ok {
			return nil, nil, fmt.Errorf("%w: tensor %q: shape %v has a negative or overflowing dimension", ErrHeader, kv.name, e.Shape)
		}
		beg, end := e.DataOffsets[0], e.DataOffsets[1]
		if beg > end || end > uint64(len(body)) {
			return nil, nil, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] outside the %d-byte buffer", ErrLayout, kv.name, beg, end, len(body))
		}
		if end-beg != want {
			return nil, nil, fmt.Errorf("%w: tensor %q: %d bytes, shape %v of %s needs %d", ErrLayout, kv.name, end-beg, e.Shape, e.DType, want)
		}
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			shape[i] = int(d)
		}
		ts = append(ts, Tensor{Name: kv.name, DType: e.DType, Shape: shape, Data: body[beg:end:end]})
		offs = append(offs, [2]uint64{beg, end})
	}
	// The buffer must be covered exactly once, in some order: sort by offset and walk it.
	idx := make([]int, len(ts))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool {
		a, c := offs[idx[i]], offs[idx[j]]
		if a[0] != c[0] {
			return a[0] < c[0]
		}
		if a[1] != c[1] {
			return a[1] < c[1]
		}
		return ts[idx[i]].Name < ts[idx[j]].Name
	})
	var pos uint64
	sorted := make([]Tensor, len(ts))
	for k, i := range idx {
		if offs[i][0] != pos {
			if offs[i][0] < pos {
				return nil, nil, fmt.Errorf("%w: tensor %q at [%d, %d] overlaps the previous tensor ending at %d", ErrLayout, ts[i].Name, offs[i][0], offs[i][1], pos)
			}
			return nil, nil, fmt.Errorf("%w: hole of %d bytes before tensor %q at offset %d", ErrLayout, offs[i][0]-pos, ts[i].Name, offs[i][0])
		}
		pos = offs[i][1]
		sorted[k] = ts[i]
	}
	if pos != uint64(len(body)) {
		return nil, nil, fmt.Errorf("%w: tensors cover %d bytes of the %d-byte buffer", ErrLayout, pos, len(body))
	}
	return sorted, meta, nil
}

type rawEntry struct {
	name  string
	value json.RawMessage
}

// splitObject splits the header's top-level JSON object into its entries, rejecting duplicate
// names (encoding/json would silently keep the last) and anything after the closing brace other
// than padding whitespace.
func splitObject(hdr []byte) ([]rawEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if _, err := dec.Token(); err != nil { // the '{' checked by the caller
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	var out []rawEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHeader, err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: expected a name, found %v", ErrHeader, tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: duplicate name %q", ErrHeader, name)
		}
		seen[name] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%w: entry %q: %v", ErrHeader, name, err)
		}
		out = append(out, rawEntry{name, v})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	rest := hdr[dec.InputOffset():]
	if len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: %d unexpected bytes after the JSON object", ErrHeader, len(rest))
	}
	return out, nil
}

// Find returns the tensor named name from ts and whether it was there.
func Find(ts []Tensor, name string) (Tensor, bool) {
	i := slices.IndexFunc(ts, func(t Tensor) bool { return t.Name == name })
	if i < 0 {
		return Tensor{}, false
	}
	return ts[i], true
}
