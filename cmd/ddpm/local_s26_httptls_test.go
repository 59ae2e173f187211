package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// s26RunTLS is the client side of the curl line ddpm local --http-tls prints: the run's
// node.crt and node.key offered, its ca.crt trusted, the server checked for the address dialed
// (127.0.0.1), as curl checks it.
func s26RunTLS(t *testing.T, certs string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(certs, tlsauth.CertFile), filepath.Join(certs, tlsauth.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: runCAPool(t, certs), MinVersion: tls.VersionTLS13}
}

// s26PlainGet is a plain-HTTP GET of path at addr: its status code.
func s26PlainGet(t *testing.T, addr, path string) int {
	t.Helper()
	res, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("plain HTTP GET %s%s: %v", addr, path, err)
	}
	res.Body.Close()
	return res.StatusCode
}

// s26Local starts ddpm local with args (env added to its environment) on the run folder out and
// returns once trainer-0 has stepped in this session: its output so far (and on), and stop,
// which interrupts it (SIGINT) and checks that it ends with status 130.
func s26Local(t *testing.T, out string, env []string, args ...string) (live *lockedLog, stop func()) {
	t.Helper()
	cmd, buf := localCommand(t, args...)
	cmd.Env = append(os.Environ(), env...)
	live = &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	// A resumed run's trainer-0.log goes on from the earlier session's: a step of this one.
	logf := filepath.Join(out, localrun.LogsDir, "trainer-0.log")
	fi, _ := os.Stat(logf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(logf)
		if fi != nil && int64(len(b)) >= fi.Size() {
			b = b[fi.Size():]
		}
		if bytes.Contains(b, []byte(`"step":`)) {
			break
		}
		select {
		case <-done:
			t.Fatalf("ddpm local %s ended before trainer-0 stepped: exit %d\n%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), live)
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			t.Fatalf("ddpm local %s: trainer-0 never stepped:\n%s", strings.Join(args, " "), live)
		}
	}
	return live, func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		werr := <-done
		buf.WriteString(live.String())
		if r := finish(t, cmd, buf, werr); r.code != 130 {
			t.Fatalf("ddpm local %s, interrupted: exit %d, want 130:\n%s", strings.Join(args, " "), r.code, r.out)
		}
	}
}

// TestLocalS26HTTPTLS: ddpm local --http-tls starts its coordinators and trainers with
// --http-tls: the line with the dashboard's URL says https and how to reach it (curl with the
// run's certificates), the dashboard, /api/status and a trainer's /metrics answer over HTTPS to
// the run's certificate as the line gives it, /healthz without one; /api/status without a
// client certificate is 401 and plain HTTP 400, as for ddpm coordinator --http-tls. local.json
// records the choice; --resume keeps it, and --resume --http-tls=false is refused in one line,
// exit 2. On the old code --http-tls was an unknown flag (exit 2, nothing started).
func TestLocalS26HTTPTLS(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery, run.GlobalBatch, run.T = 100000, 50, 8, 50
	run.HeartbeatTimeout = config.Duration(250 * time.Millisecond)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "run.yaml")
	if err := os.WriteFile(cfg, run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "R")
	certs := filepath.Join(out, localrun.CertsDir)

	// start runs ddpm local with args until trainer-0 has stepped, checks the line with the
	// dashboard's URL and what answers there, then stops it with SIGINT (status 130).
	start := func(args ...string) {
		t.Helper()
		live, stop := s26Local(t, out, nil, args...)
		man, err := localrun.ReadManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		if !man.HTTPTLS {
			t.Errorf("local.json: http_tls false after ddpm local %s", strings.Join(args, " "))
		}
		grpc, dash := localrun.Addr(man.CoordinatorPorts[0].GRPC), localrun.Addr(man.CoordinatorPorts[0].HTTP)
		line := fmt.Sprintf("ddpm local: coordinators %s (ddpm status %s, ddpm loss %s; from elsewhere --coordinator %s --certs %s); dashboard https://%s/ "+
			"(HTTPS with a certificate of the run: curl --cert %s --key %s --cacert %s https://%s/api/status)",
			grpc, out, out, grpc, certs, dash, filepath.Join(certs, "node.crt"), filepath.Join(certs, "node.key"), filepath.Join(certs, "ca.crt"), dash)
		if !strings.Contains(live.String(), "\n"+line+"\n") {
			t.Errorf("ddpm local %s: no line\n%s\nin:\n%s", strings.Join(args, " "), line, live)
		}
		tc := s26RunTLS(t, certs)
		if code, body, err := testutil.HTTPSGet(t, tc, dash, "/"); err != nil || code != 200 || !strings.Contains(body, "<html") {
			t.Errorf("GET https://%s/ with the run's certificate: %d %.200q %v, want the dashboard", dash, code, body, err)
		}
		var doc struct {
			Replica string `json:"replica"`
		}
		if code, body, err := testutil.HTTPSGet(t, tc, dash, "/api/status"); err != nil || code != 200 || json.Unmarshal([]byte(body), &doc) != nil || doc.Replica != "c0" {
			t.Errorf("GET https://%s/api/status with the run's certificate: %d %.200q %v, want 200 from c0", dash, code, body, err)
		}
		trainerHTTP := localrun.Addr(man.TrainerPorts[0].HTTP)
		if code, body, err := testutil.HTTPSGet(t, tc, trainerHTTP, "/metrics"); err != nil || code != 200 || !strings.Contains(body, "ddpm_trainer_") {
			t.Errorf("GET https://%s/metrics (trainer-0) with the run's certificate: %d %.200q %v, want 200 with ddpm_trainer_ series", trainerHTTP, code, body, err)
		}
		noCert := &tls.Config{RootCAs: tc.RootCAs, MinVersion: tls.VersionTLS13}
		if code, _, err := testutil.HTTPSGet(t, noCert, dash, "/healthz"); err != nil || code != 200 {
			t.Errorf("GET https://%s/healthz without a certificate: %d %v, want 200", dash, code, err)
		}
		want := "ddpm: no client certificate: /api/status needs one signed by this cluster's CA, of role coordinator or operator or none " +
			"(curl --cert DIR/node.crt --key DIR/node.key --cacert DIR/ca.crt)\n"
		if code, body, err := testutil.HTTPSGet(t, noCert, dash, "/api/status"); err != nil || code != 401 || body != want {
			t.Errorf("GET https://%s/api/status without a certificate: %d %q %v, want 401 %q", dash, code, body, err, want)
		}
		for _, addr := range []string{dash, trainerHTTP} {
			if code := s26PlainGet(t, addr, "/healthz"); code != 400 {
				t.Errorf("plain HTTP GET http://%s/healthz: %d, want 400", addr, code)
			}
		}
		stop()
	}
	start("--config", cfg, "--out", out, "--coordinators", "1", "--trainers", "1", "--samples", "0", "--quiet", "--http-tls")

	refusedLeavesRun(t, out, "ddpm: --http-tls cannot change on --resume: "+out+" serves its HTTP over HTTPS (it started with --http-tls, recorded in "+
		filepath.Join(out, localrun.ManifestFile)+"); drop --http-tls=false", "--resume", out, "--http-tls=false")
	start("--resume", out, "--quiet") // keeps HTTPS without being told
}

// TestLocalS26HTTPTLSResumePlainRun: a run that started without --http-tls (local.json
// without http_tls, as every run of an older ddpm) is refused --resume --http-tls in one line,
// exit 2, nothing started or changed: its choice was plain HTTP.
func TestLocalS26HTTPTLSResumePlainRun(t *testing.T) {
	out := makeLocalRun(t, 1, nil)
	refusedLeavesRun(t, out, "ddpm: --http-tls cannot change on --resume: "+out+" serves its HTTP in plain text (it started without --http-tls, recorded in "+
		filepath.Join(out, localrun.ManifestFile)+"); drop --http-tls, or start a new run with it", "--resume", out, "--http-tls")
}

// refusedLeavesRun runs `ddpm local args...` and fails t unless it exits 2 with the one line
// want (wantOneLine) and leaves the run folder out as it was (tree).
func refusedLeavesRun(t *testing.T, out, want string, args ...string) {
	t.Helper()
	before := tree(t, out)
	wantOneLine(t, runLocalCmd(t, args...), 2, want)
	if after := tree(t, out); !slices.Equal(after, before) {
		t.Errorf("ddpm local %v changed the run folder:\n%s\nwas\n%s", args, strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
}

// TestLocalS26ChildrenWithoutFlagEnv: the DDPM_<FLAG> variables of ddpm coordinator's and ddpm
// trainer's flags in ddpm local's environment, which its children inherited, are not passed to
// them, and one line says so: with DDPM_HTTP_TLS=true a run without --http-tls serves plain
// HTTP, as its dashboard line says (the coordinators served HTTPS under a line saying
// http://), and with DDPM_LR=0.5 the run trains on its run.yaml (the coordinators took the lr
// on top of it, and the trainers' join failed on the config mismatch, exit 1).
func TestLocalS26ChildrenWithoutFlagEnv(t *testing.T) {
	out := makeLocalRun(t, 1, func(r *config.Run) { r.Steps, r.CheckpointEvery = 100000, 50 })
	man, err := localrun.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	live, stop := s26Local(t, out, []string{"DDPM_HTTP_TLS=true", "DDPM_LR=0.5"}, "--resume", out, "--quiet")
	want := "ddpm local: DDPM_HTTP_TLS, DDPM_LR are set here but not passed to the run's coordinators and trainers (their settings are the run's: run.yaml and local.json)\n"
	if !strings.Contains(live.String(), "\n"+want) {
		t.Errorf("no line %q in:\n%s", want, live)
	}
	dash := localrun.Addr(man.CoordinatorPorts[0].HTTP)
	if !strings.Contains(live.String(), "; dashboard http://"+dash+"/\n") {
		t.Errorf("no dashboard line with http://%s/ in:\n%s", dash, live)
	}
	if code := s26PlainGet(t, dash, "/healthz"); code != 200 {
		t.Errorf("plain HTTP GET http://%s/healthz with DDPM_HTTP_TLS=true around ddpm local: %d, want 200", dash, code)
	}
	stop()
}
