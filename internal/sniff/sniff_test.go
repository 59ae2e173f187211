package sniff

import "testing"

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
