package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// s25Certs runs `ddpm certs init DIR` under t.TempDir and `ddpm certs issue` for each role, and
// returns the directory of init's (role-less) certificate and those of the roles by name.
func s25Certs(t *testing.T, bin string, roles ...string) (string, map[string]string) {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "certs")
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ddpm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("certs", "init", dir)
	byRole := map[string]string{}
	for _, r := range roles {
		byRole[r] = filepath.Join(base, "certs-"+r)
		run("certs", "issue", "--certs", dir, "--role", r, "--out", byRole[r])
	}
	return dir, byRole
}

// TestCoordinatorS25HTTPTLS: a real `ddpm coordinator --http-tls --certs DIR` process (the
// directory of `ddpm certs init`) answers its --http-addr over HTTPS only. A client that trusts
// ca.crt but offers no certificate (curl --cacert, a kubelet probe) gets /healthz and /readyz and
// a 401 with one line on /api/status and /metrics; an operator's certificate (`ddpm certs issue
// --role operator`) gets /api/status, the dashboard and /metrics; a trainer's gets 403; a
// certificate of another CA fails the handshake; plain HTTP gets 400; `ddpm status` and `ddpm
// loss` with --certs OPERATOR (gRPC) read the run as before. The replica logs the two requests without a
// certificate as one rate-limited line. On the old code `--http-tls` was an unknown flag (exit 2
// before anything started).
func TestCoordinatorS25HTTPTLS(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	certs, roles := s25Certs(t, bin, "operator", "trainer")
	foreign, _ := s25Certs(t, bin)
	raft, grpcAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	c0 := startOpCoordinator(t, bin, 60*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpcAddr,
		"--http-addr", httpAddr, "--peers", "c0="+raft+"="+grpcAddr, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--preset", "mnist", "--certs", certs, "--http-tls")

	pool := runCAPool(t, certs)
	noCert := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	client := func(dir string) *tls.Config {
		b, err := tlsauth.Load(tlsauth.Config{Dir: dir, ServerName: tlsauth.NodeName})
		if err != nil {
			t.Fatal(err)
		}
		return b.HTTPClientTLS()
	}

	for _, p := range []string{"/healthz", "/readyz"} {
		code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, p)
		if err != nil || code != 200 || !strings.Contains(body, " c0 ") {
			t.Errorf("GET %s without a certificate: %d %q %v, want 200 naming c0", p, code, body, err)
		}
	}
	for _, p := range []string{"/api/status", "/metrics"} {
		want := "ddpm: no client certificate: " + p + " needs one signed by this cluster's CA, of role coordinator or operator or none " +
			"(curl --cert DIR/node.crt --key DIR/node.key --cacert DIR/ca.crt)\n"
		if code, body, err := testutil.HTTPSGet(t, noCert, httpAddr, p); err != nil || code != 401 || body != want {
			t.Errorf("GET %s without a certificate: %d %q %v, want 401 %q", p, code, body, err, want)
		}
	}

	op := client(roles["operator"])
	code, body, err := testutil.HTTPSGet(t, op, httpAddr, "/api/status")
	var doc struct {
		Replica string `json:"replica"`
	}
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &doc) != nil || doc.Replica != "c0" {
		t.Errorf("GET /api/status with an operator's certificate: %d %.200q %v, want 200 with replica c0", code, body, err)
	}
	if code, body, err := testutil.HTTPSGet(t, op, httpAddr, "/metrics"); err != nil || code != 200 || !strings.Contains(body, "ddpm_coordinator_") {
		t.Errorf("GET /metrics with an operator's certificate: %d %.200q %v, want 200 with ddpm_coordinator_ series", code, body, err)
	}
	if code, body, err := testutil.HTTPSGet(t, op, httpAddr, "/"); err != nil || code != 200 || !strings.Contains(body, "<html") {
		t.Errorf("GET / with an operator's certificate: %d %.200q %v, want the dashboard", code, body, err)
	}
	wantTrainer := "ddpm: role trainer may not read /api/summary (roles allowed: coordinator, operator, or a certificate without a role)\n"
	if code, body, err := testutil.HTTPSGet(t, client(roles["trainer"]), httpAddr, "/api/summary"); err != nil || code != 403 || body != wantTrainer {
		t.Errorf("GET /api/summary with a trainer's certificate: %d %q %v, want 403 %q", code, body, err, wantTrainer)
	}
	other := noCert.Clone()
	other.Certificates = client(foreign).Certificates
	if _, _, err := testutil.HTTPSGet(t, other, httpAddr, "/healthz"); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Errorf("GET /healthz with another CA's certificate: %v, want the handshake refused", err)
	}
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 {
		t.Errorf("plain HTTP GET /healthz: %d, want 400", res.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "status", "--coordinator", grpcAddr, "--certs", roles["operator"]).CombinedOutput()
	if err != nil || !regexp.MustCompile(`(?m)^replica +c0 \(`).Match(out) {
		t.Errorf("ddpm status --certs OPERATOR: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, bin, "loss", "--coordinator", grpcAddr, "--certs", roles["operator"]).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "STEP") {
		t.Errorf("ddpm loss --certs OPERATOR: %v\n%s", err, out)
	}

	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(c0.log(), `"msg":"tlsauth: refused HTTPS connection"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	c0.stop(t)
	log := c0.log()
	// A line with "suppressed" is the limiter's count at the end of a 30 s window (a slow run).
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"msg":"tlsauth: refused HTTP request"`) && !strings.Contains(l, `"suppressed"`) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d lines 'refused HTTP request', want 2 (the two requests without a certificate, the trainer's):\n%s", n, log)
	}
	for _, w := range []string{`"path":"/api/status","cert_role":"","reason":"no client certificate"`,
		`"path":"/api/summary","cert_role":"trainer","reason":"role trainer"`, `"msg":"tlsauth: refused HTTPS connection"`} {
		if !strings.Contains(log, w) {
			t.Errorf("log lacks %s:\n%s", w, log)
		}
	}
}

// TestCoordinatorS25HTTPTLSMistakes: --http-tls that cannot serve is refused at once with one
// line and exit 2, before the --data-dir is made: with --insecure or DDPM_INSECURE (no
// certificate to serve), with neither --certs nor --insecure, without --http-addr, and with its
// --http-addr port held by a listening program (named). On the old code `--http-tls` was an
// unknown flag, and DDPM_HTTP_TLS was ignored (the replica started in plain HTTP).
func TestCoordinatorS25HTTPTLSMistakes(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft, grpcAddr, httpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "c0")
	args := func(extra ...string) []string {
		return append([]string{"coordinator", "--id", "c0", "--raft-addr", raft, "--grpc-addr", grpcAddr,
			"--peers", "c0=" + raft + "=" + grpcAddr, "--data-dir", dir, "--bootstrap"}, extra...)
	}
	const fix = "needs --certs DIR, whose node certificate it serves and whose CA checks the clients"
	runRefused(t, bin, 2, "ddpm: coordinator: --http-tls "+fix+"; --insecure gives neither\n",
		args("--http-addr", httpAddr, "--http-tls", "--insecure")...)
	runRefused(t, bin, 2, "ddpm: coordinator: --http-tls "+fix+"\n", args("--http-addr", httpAddr, "--http-tls")...)
	runRefused(t, bin, 2, "ddpm: coordinator: --http-tls needs --http-addr, the address to serve HTTPS on\n",
		args("--http-tls", "--insecure")...)
	t.Run("env", func(t *testing.T) {
		t.Setenv("DDPM_INSECURE", "true")
		runRefused(t, bin, 2, "ddpm: coordinator: --http-tls "+fix+"; DDPM_INSECURE in the environment gives neither\n",
			args("--http-addr", httpAddr, "--http-tls")...)
		t.Setenv("DDPM_HTTP_TLS", "true")
		runRefused(t, bin, 2, "ddpm: coordinator: DDPM_HTTP_TLS "+fix+"; DDPM_INSECURE in the environment gives neither\n",
			args("--http-addr", httpAddr)...)
	})
	mustNotExist(t, dir)

	certs, _ := s25Certs(t, bin)
	held, err := net.Listen("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	pid := os.Getpid()
	runRefused(t, bin, 2, fmt.Sprintf("ddpm: coordinator: cannot listen on --http-addr %s: the port is in use by pid %d (%s): "+
		"stop that process, or give another --http-addr\n", httpAddr, pid, procCommand(t, pid)),
		args("--http-addr", httpAddr, "--http-tls", "--certs", certs)...)
	mustNotExist(t, dir)
}
