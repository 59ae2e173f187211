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

// Checkpoint reports whether head begins as a bbolt file (a checkpoints.db, a coordinator's
// raft.db): its first page's meta magic 0xED0CDAED at bytes 16..19, little-endian.
func Checkpoint(head []byte) bool {
	return len(head) >= 20 && le32(head[16:20]) == 0xED0CDAED
}

// Safetensors reports whether head begins as safetensors weights: a little-endian u64 header
// length (under 4 GiB, more than "{}") and the header's JSON object opening at byte 8.
func Safetensors(head []byte) bool {
	return len(head) >= 9 && head[8] == '{' && le32(head[4:8]) == 0 && le32(head[:4]) > 1
}

// Image reports whether head begins as a PNG, JPEG or WebP image.
func Image(head []byte) bool {
	return bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")) || bytes.HasPrefix(head, []byte("\xff\xd8\xff")) ||
		len(head) >= 12 && string(head[:4]) == "RIFF" && string(head[8:12]) == "WEBP"
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
