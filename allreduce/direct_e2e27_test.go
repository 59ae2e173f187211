package allreduce

import (
	"bufio"
	"io"
	"testing"
	"time"
)

// TestDirectS27ShortPostNotHeld: a client whose first byte is the HTTP/2 preface's but that
// sends an HTTP/1.1 POST shorter than a preface and a frame header (28 bytes), then waits for
// the answer, is told from a direct client at its second byte: isDirectStart returns false
// with the connection still open. It waited for 33 bytes that never came, so DirectListener
// held such a client directHandshakeTimeout (10 s) before handing it to grpc.Server.
func TestDirectS27ShortPostNotHeld(t *testing.T) {
	r, w := io.Pipe()
	defer r.Close()
	req := "POST / HTTP/1.1\r\nHost: x\r\n\r\n"
	go w.Write([]byte(req)) // then silent: the client waits for an answer
	res := make(chan bool, 1)
	go func() { res <- isDirectStart(bufio.NewReaderSize(r, h2ReadBuffer)) }()
	select {
	case direct := <-res:
		if direct {
			t.Fatalf("%q taken for a direct client", req)
		}
	case <-time.After(time.Minute): // bounds a hang only: the answer needs no more bytes
		r.Close()
		t.Fatalf("isDirectStart still waiting for more bytes after %q", req)
	}
}
