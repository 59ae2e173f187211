package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerS26HTTPAddrZeroLogsBound: a `ddpm trainer --http-addr 127.0.0.1:0` process (any free
// port) logs the address it bound, whose /healthz answers 200. It logged ":0" at best (the flag's
// value), which names no port anyone can reach.
func TestTrainerS26HTTPAddrZeroLogsBound(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	log := &tlsauthtest.Log{}
	cmd := exec.Command(bin, "trainer", "--id", "t0", "--preset", "mnist", "--coordinator", closedAddr(t), "--listen", freeAddr(t),
		"--http-addr", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "t0"), "--insecure")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-exited })
	var bound string
	for deadline := time.Now().Add(time.Minute); bound == ""; time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(log.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == MsgServingHTTP {
				bound = fmt.Sprint(rec["http_addr"])
			}
		}
		select {
		case <-exited:
			t.Fatalf("the trainer exited before logging %q:\n%s", MsgServingHTTP, log.String())
		default:
		}
		if bound == "" && time.Now().After(deadline) {
			t.Fatalf("no %q line within a minute:\n%s", MsgServingHTTP, log.String())
		}
	}
	if _, port, err := net.SplitHostPort(bound); err != nil || port == "0" || !strings.HasPrefix(bound, "127.0.0.1:") {
		t.Fatalf("logged http_addr %q; want 127.0.0.1:PORT, the port bound", bound)
	}
	resp, err := http.Get("http://" + bound + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz at the logged address %s: %v", bound, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok: ") {
		t.Errorf("GET http://%s/healthz: %d %q; want 200 ok: ...", bound, resp.StatusCode, body)
	}
}
