package sniff

import (
	"bytes"
	"image"
	pngenc "image/png"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestText: UTF-8 without NUL is text; a character cut short at the end is text only when the
// head was cut there; bytes that are no UTF-8 anywhere, a NUL, or nothing at all are not.
func TestText(t *testing.T) {
	euro := "€" // 3 bytes: e2 82 ac
	for _, c := range []struct {
		head string
		cut  bool
		want bool
	}{
		{"step,loss\n1,0.5\n", false, true},
		{"step,loss\n1,0.5\n", true, true},
		{"price " + euro, false, true},
		{"price " + euro[:2], true, true},   // the read ended inside €
		{"price " + euro[:2], false, false}, // the file ends inside €: no UTF-8
		{"price " + euro[:1], true, true},
		{"abcdef\xff\xfe", false, false},
		{"abcdef\xff\xfe", true, false}, // 0xff, 0xfe start no character: not a cut one
		{"abc\x00def", false, false},
		{"", false, false},
		{"\xe2\x82\xe2\x82", true, false}, // a broken character before the cut one
	} {
		if got := Text([]byte(c.head), c.cut); got != c.want {
			t.Errorf("Text(%q, cut=%v) = %v, want %v", c.head, c.cut, got, c.want)
		}
	}
}

// TestKinds: a real bbolt file, safetensors bytes and a PNG each answer to their own check only.
func TestKinds(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := db.Path()
	db.Close()
	boltHead, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st := append([]byte{18, 0, 0, 0, 0, 0, 0, 0}, `{"__metadata__":{}}`...)
	var png bytes.Buffer
	if err := pngenc.Encode(&png, image.NewGray(image.Rect(0, 0, 2, 2))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name              string
		head              []byte
		bolt, safet, pict bool
	}{
		{"bbolt", boltHead, true, false, false},
		{"safetensors", st, false, true, false},
		{"png", png.Bytes(), false, false, true},
		{"csv", []byte("step,loss\n1,0.5\n"), false, false, false},
	} {
		if Checkpoint(c.head) != c.bolt || Safetensors(c.head) != c.safet || Image(c.head) != c.pict {
			t.Errorf("%s: Checkpoint, Safetensors, Image = %v, %v, %v; want %v, %v, %v", c.name,
				Checkpoint(c.head), Safetensors(c.head), Image(c.head), c.bolt, c.safet, c.pict)
		}
	}
}
