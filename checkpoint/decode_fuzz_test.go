package checkpoint

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"ddpm/api"
)

// FuzzHeader feeds arbitrary bytes to the checkpoint header decoder used for headers read from
// disk and from the network (proto.Unmarshal + checkHeader; issue 13). An accepted header must
// describe tensors inside the params arena and arenas within MaxArenaLen, and survive
// fromHeader -> headerOf with the same canonical encoding.
func FuzzHeader(f *testing.F) {
	for _, c := range []*Checkpoint{testState(3, 10), testState(0, 1), {Step: 1, Tensors: nil}} {
		b, err := proto.Marshal(headerOf(c, 64))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	h := headerOf(testState(2, 8), 64)
	h.Tensors[0].Shape = []int64{1 << 62, 4} // product overflows int64
	b, _ := proto.Marshal(h)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		h := new(api.CheckpointHeader)
		if proto.Unmarshal(data, h) != nil {
			return
		}
		if h.FormatVersion == 0 { // headerOf always writes the version; give the fuzzer a head start
			h.FormatVersion = FormatVersion
		}
		if err := checkHeader(h); err != nil {
			return
		}
		np := h.ArenaLen[0]
		var total uint64
		for _, n := range h.ArenaLen {
			if n > MaxArenaLen {
				t.Fatalf("accepted an arena of %d elements", n)
			}
			total += n
		}
		for _, tn := range h.Tensors {
			if tn.Offset < 0 || tn.Len < 0 || uint64(tn.Offset)+uint64(tn.Len) > np {
				t.Fatalf("accepted tensor %s [%d, +%d) outside params of %d", tn.Name, tn.Offset, tn.Len, np)
			}
		}
		if total > 1<<16 {
			return // consistent but too large to allocate in a fuzz iteration
		}
		c := fromHeader(h)
		back := headerOf(c, int(h.ChunkBytes))
		back.FormatVersion = h.FormatVersion
		if !bytes.Equal(canonicalHeader(back), canonicalHeader(h)) {
			t.Fatalf("fromHeader -> headerOf changed the canonical header:\n%x\n%x", canonicalHeader(h), canonicalHeader(back))
		}
	})
}

// FuzzStoreFile patches bytes of a real checkpoint file and reads it back (issue 13): Open, List
// and Get must fail with the package's errors, never panic, and a Get that succeeds must return
// exactly the state that was saved.
func FuzzStoreFile(f *testing.F) {
	base := filepath.Join(f.TempDir(), "base.db")
	want := testState(5, 300)
	s, err := Open(base, Options{ChunkBytes: 256})
	if err != nil {
		f.Fatal(err)
	}
	sum, err := s.Save(want)
	if err != nil {
		f.Fatal(err)
	}
	if err := s.MarkCommitted(5); err != nil {
		f.Fatal(err)
	}
	s.Close()
	orig, err := os.ReadFile(base)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), []byte{0xff})
	f.Add(uint32(4096), []byte{1, 2, 3, 4})
	f.Add(uint32(8192+100), []byte{0})
	f.Add(uint32(len(orig)-10), bytes.Repeat([]byte{0xaa}, 64))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		file := append([]byte(nil), orig...)
		at := int(off % uint32(len(file)))
		copy(file[at:], patch)
		p := filepath.Join(dir, "ckpt.db")
		if err := os.WriteFile(p, file, 0o600); err != nil {
			t.Fatal(err)
		}
		known := func(err error) bool {
			return errors.Is(err, ErrCorruptCheckpoint) || errors.Is(err, ErrFormat) || errors.Is(err, ErrNotFound)
		}
		st, err := Open(p, Options{ReadOnly: true})
		if err != nil {
			if !known(err) {
				t.Fatalf("Open: unexpected error: %v", err)
			}
			return
		}
		defer st.Close()
		if _, err := st.List(); err != nil && !known(err) {
			t.Fatalf("List: unexpected error: %v", err)
		}
		got, err := st.Get(5)
		if err != nil {
			if !known(err) {
				t.Fatalf("Get: unexpected error: %v", err)
			}
			return
		}
		if got.SHA256 != sum {
			t.Fatalf("Get returned sha256 %s, saved %s", got.SHA256, sum)
		}
		assertSame(t, got, want)
	})
}
