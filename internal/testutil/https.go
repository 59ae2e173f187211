package testutil

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"
)

// HTTPSGet sends GET https://addr+path with tc (no certificates in tc: none offered) on a
// client of its own, within 10 s, and returns the status code and body; err is the transport's
// error (a refused handshake, no answer). A failed read of the body fails t.
func HTTPSGet(t testing.TB, tc *tls.Config, addr, path string) (code int, body string, err error) {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	defer cl.CloseIdleConnections()
	res, err := cl.Get("https://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b), nil
}
