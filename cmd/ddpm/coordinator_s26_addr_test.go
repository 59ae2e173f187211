package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// startedLine returns the fields of p's coordinatorStartedMsg line (JSON, as logged to a pipe).
func startedLine(t *testing.T, p *opCoordinator) map[string]any {
	t.Helper()
	for _, line := range strings.Split(p.log(), "\n") {
		if !strings.Contains(line, `"msg":"`+coordinatorStartedMsg+`"`) {
			continue
		}
		var f map[string]any
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("start line %q: %v", line, err)
		}
		return f
	}
	t.Fatalf("no %q line in\n%s", coordinatorStartedMsg, p.log())
	return nil
}

// TestCoordinatorS26HTTPPortZero: a real `ddpm coordinator --http-addr 127.0.0.1:0`, plain and
// with --http-tls, logs in its start line the port it got, and /healthz answers there ("ok c0
// ..."). The line said "127.0.0.1:0", an address nobody can ask.
func TestCoordinatorS26HTTPPortZero(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs, _ := s25Certs(t, bin)
	pool := runCAPool(t, certs)
	bound := regexp.MustCompile(`^127\.0\.0\.1:([1-9][0-9]*)$`)
	for _, httpTLS := range []bool{false, true} {
		raft, grpcAddr := freeAddr(t), freeAddr(t)
		args := []string{"coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpcAddr, "--http-addr", "127.0.0.1:0",
			"--peers", "c0=" + raft + "=" + grpcAddr, "--data-dir", filepath.Join(t.TempDir(), "c0"), "--bootstrap", "--preset", "mnist"}
		if httpTLS {
			args = append(args, "--certs", certs, "--http-tls")
		} else {
			args = append(args, "--insecure")
		}
		p := startOpCoordinator(t, bin, 60*time.Second, args...)
		addr, _ := startedLine(t, p)["http"].(string)
		if !bound.MatchString(addr) {
			t.Fatalf("--http-tls %v: start line's http is %q, want 127.0.0.1:PORT, the port bound\n%s", httpTLS, addr, p.log())
		}
		var code int
		var body string
		var err error
		if httpTLS {
			code, body, err = testutil.HTTPSGet(t, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, addr, "/healthz")
		} else {
			var res *http.Response
			if res, err = http.Get("http://" + addr + "/healthz"); err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				code, body = res.StatusCode, string(b)
			}
		}
		if err != nil || code != 200 || !strings.HasPrefix(body, "ok c0 ") {
			t.Errorf("--http-tls %v: GET %s/healthz: %d %q %v, want 200 \"ok c0 ...\"", httpTLS, addr, code, body, err)
		}
		p.stop(t)
	}
}

// TestCoordinatorS26BadListenAddr: a replica address net.Listen cannot read (--http-addr with and
// without --http-tls, --grpc-addr, --raft-addr, a host that is no IP, or DDPM_HTTP_ADDR) is
// refused with one line naming the flag (or the variable, as a bad variable is said) and the
// value, status 2, before anything binds or --data-dir is made. An unparsable --http-addr,
// --grpc-addr or --raft-addr exited 1 (2 only with --http-tls), from the node's bind or lookup.
func TestCoordinatorS26BadListenAddr(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs := tlsauthtest.Dir(t)
	raft, grpcAddr := freeAddr(t), freeAddr(t)
	for _, tc := range []struct {
		name, raft, grpc, http, env string
		tls                         bool
		want                        string
	}{
		{"http", raft, grpcAddr, "localhost", "", false, "--http-addr localhost: not a host:port address (missing port in address)"},
		{"http tls", raft, grpcAddr, "localhost", "", true, "--http-addr localhost: not a host:port address (missing port in address)"},
		{"http port", raft, grpcAddr, "127.0.0.1:99999", "", false, "--http-addr 127.0.0.1:99999: not a host:port address (invalid port)"},
		{"http host", raft, grpcAddr, "999.1.1.1:80", "", false, "--http-addr 999.1.1.1:80: not a host:port address (not an IP: 999.1.1.1)"},
		{"http short", raft, grpcAddr, "10.0.5:80", "", false, "--http-addr 10.0.5:80: not a host:port address (not an IP: 10.0.5)"},
		{"grpc", raft, "127.0.0.1:99999", "", "", false, "--grpc-addr 127.0.0.1:99999: not a host:port address (invalid port)"},
		{"raft", "127.0.0.1", grpcAddr, "", "", false, "--raft-addr 127.0.0.1: not a host:port address (missing port in address)"},
		{"env", raft, grpcAddr, "", "1:2:3", false, `DDPM_HTTP_ADDR="1:2:3" (--http-addr): not a host:port address (too many colons in address)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "c0")
			args := []string{"coordinator", "--id", "c0", "--raft-addr", tc.raft, "--grpc-addr", tc.grpc,
				"--peers", "c0=" + tc.raft + "=" + tc.grpc, "--data-dir", dataDir, "--bootstrap", "--preset", "mnist", "--certs", certs}
			if tc.http != "" {
				args = append(args, "--http-addr", tc.http)
			}
			if tc.tls {
				args = append(args, "--http-tls")
			}
			if tc.env != "" {
				t.Setenv("DDPM_HTTP_ADDR", tc.env) // the child inherits it
			}
			runRefused(t, bin, 2, "ddpm: coordinator: "+tc.want+"\n", args...)
			mustNotExist(t, dataDir)
		})
	}
}
