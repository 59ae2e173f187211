package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ddpm/checkpoint"
	"ddpm/coordinator/fsm"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestTrainerStaysAfterDone: a cluster trainer with --stay-after-done whose run succeeds stays
// up with one log line (MsgStayingUp) instead of exiting 0, which a StatefulSet (restartPolicy
// Always) answered with restarts until CrashLoopBackOff: /healthz and /readyz answer 200 saying
// the run is complete, `ddpm checkpoint fetch` copies the final committed checkpoint from its
// --listen address, and SIGTERM ends it with status 0. --stay-after-done with --standalone is
// refused in one line, status 2.
func TestTrainerStaysAfterDone(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 4, 1, 1, 2*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, cli := startReplica(t, run, "dev", certs)
	listen, httpAddr := freeAddr(t), freeAddr(t)
	p := launchTrainer(t, bin, filepath.Join(dir, "t0"), "t0", listen, coord, cfg, certs, "--stay-after-done", "--http-addr", httpAddr)

	line := waitStayingUp(t, p, 60*time.Second)
	st := waitFor(t, cli, "the run's success", 10*time.Second, func(s *fsm.State) bool { return s.Status == fsm.StatusSucceeded })
	var sha string
	for _, ck := range st.Checkpoints {
		if ck.Step == 4 {
			sha = ck.SHA256
		}
	}

	want := "ok: the run is complete (step 4); serving this volume's committed checkpoints (newest: step 4) to ddpm checkpoint fetch\n"
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
	}

	copyDB := filepath.Join(dir, "copy.db")
	if stdout, stderr, code := ddpmRun(t, bin, "checkpoint", "fetch", listen, "--certs", certs, "--step", "4", "--out", copyDB); code != 0 {
		t.Fatalf("ddpm checkpoint fetch from the finished trainer: exit %d\n%s%s", code, stdout, stderr)
	}
	cp, err := checkpoint.Open(copyDB, checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cp.LatestCommitted()
	cp.Close()
	if err != nil || got.Step != 4 || got.SHA256 != sha {
		t.Fatalf("fetched copy: %v step %d sha256 %s, want the committed step 4 %s", err, got.Step, got.SHA256, sha)
	}

	termExitsClean(t, p)
	if b, _ := os.ReadFile(p.log); bytes.Count(b, line) != 1 {
		t.Errorf("the %q line appears %d times, want once", MsgStayingUp, bytes.Count(b, line))
	}

	stdout, stderr, code := ddpmRun(t, bin, "trainer", "--standalone", "--stay-after-done", "--preset", "mnist", "--data-dir", filepath.Join(dir, "solo"))
	if want := "ddpm: --stay-after-done is for a cluster trainer: a standalone trainer serves no checkpoints (ddpm sample, eval and checkpoint export read its --data-dir once it has exited)\n"; code != 2 || stdout != "" || stderr != want {
		t.Errorf("trainer --standalone --stay-after-done: exit %d, stdout %q, stderr %q; want exit 2, %q", code, stdout, stderr, want)
	}
}

// waitStayingUp waits (within at most) for the log of p, a --stay-after-done trainer, to hold
// the MsgStayingUp line, and returns that line as the JSON log writes it; p exiting first fails
// the test.
func waitStayingUp(t *testing.T, p *trainerProc, within time.Duration) []byte {
	t.Helper()
	line := []byte(`"msg":"` + MsgStayingUp + `"`)
	for deadline := time.Now().Add(within); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(p.log)
		if bytes.Contains(b, line) {
			return line
		}
		select {
		case <-p.exited:
			t.Fatalf("the trainer exited (%v) instead of staying up:\n%s%s", p.err, b, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q line within %v:\n%s", MsgStayingUp, within, b)
		}
	}
}

// termExitsClean sends p SIGTERM and wants it to exit within 15 s with status 0 and nothing on
// stderr, as a trainer staying up after its run's end does.
func termExitsClean(t *testing.T, p *trainerProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("the trainer did not exit within 15 s of SIGTERM")
	}
	if p.err != nil || p.stderr.Len() != 0 {
		t.Fatalf("after SIGTERM: %v, stderr %q; want exit 0 and nothing on stderr", p.err, p.stderr.String())
	}
}
