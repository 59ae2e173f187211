// Package sniff tells what a file holds from its first bytes, for the one-line refusals of a
// file given where another kind was wanted (a CSV given as a checkpoint, a run.yaml as a
// dataset).
package sniff

import (
	"bytes"
	"unicode/utf8"
)

// Text reports whether head, the first bytes of a file, reads as text: UTF-8 without a NUL
// byte (a CSV such as a run's loss.csv, a YAML run config, a log). cut says that head stops
// before the file's end (a read of a fixed size): a multi-byte character that the cut leaves
// incomplete at head's end is then not held against it; any other byte that is no UTF-8 is. An
// empty head is no text. No bbolt or safetensors file is text (both hold zero bytes in their
// first 8).
func Text(head []byte, cut bool) bool {
	if len(head) == 0 || bytes.IndexByte(head, 0) >= 0 {
		return false
	}
	if cut {
		// The start of the last character, if within its longest encoding of the end.
		for i := len(head) - 1; i >= 0 && i >= len(head)-utf8.UTFMax; i-- {
			if utf8.RuneStart(head[i]) {
				if !utf8.FullRune(head[i:]) {
					head = head[:i]
				}
				break
			}
		}
	}
	return utf8.Valid(head)
}
