package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestInUseByStandaloneTrainer: a checkpoint file a running standalone trainer holds is refused
// with a way that works: such a trainer serves no checkpoint transfer, so the general hint's
// "ddpm checkpoint fetch TRAINER_ADDR" was a dead end; the line now says to stop it and names
// its pid. A real `ddpm trainer --standalone` process holds the file.
func TestInUseByStandaloneTrainer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	tr := exec.Command(testutil.DDPMBinary(t), "trainer", "--standalone", "--preset", "mnist", "--steps", "100000",
		"--checkpoint-every", "1000", "--global-batch", "2", "--min-trainers", "1", "--max-trainers", "1", "--data-dir", dir)
	if err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		tr.Process.Kill()
		tr.Wait()
	}()
	file := filepath.Join(dir, "checkpoints.db")
	want := fmt.Sprintf("checkpoint: %s in use by process %d (a standalone trainer (ddpm trainer --standalone), which serves no copy: stop it (kill -TERM %d: it finishes its step) and run this command again; started again, it resumes from its newest checkpoint)", file, tr.Process.Pid, tr.Process.Pid)
	args := []string{"checkpoint", "list", file}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := runCLI(t, context.Background(), nil, args...)
		if err != nil && err.Error() == want {
			wantExit(t, args, err, 2, want)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ddpm %v: %v\nwant %s", args, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestInUseHolderHint: for a cluster trainer the hint is the fetch to run, from the holder's own
// command line: its --advertise, else --listen, and its --certs made absolute against its
// working folder (or --insecure). A process that is no ddpm trainer gives no hint (the general
// one stands).
func TestInUseHolderHint(t *testing.T) {
	work := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ddpm", "trainer", "--id", "t0", "--listen", "127.0.0.1:7100", "--certs", "certs", "--data-dir", "v"},
			"a cluster trainer: copy a committed checkpoint out of it with: ddpm checkpoint fetch 127.0.0.1:7100 --certs " + filepath.Join(work, "certs") + " --step N --out COPY.db, N a committed step that ddpm status lists"},
		{[]string{"/usr/local/bin/ddpm", "trainer", "--listen=10.0.0.5:7100", "--advertise=ddpm-trainer-0.ddpm-trainer:7100", "--insecure"},
			"a cluster trainer: copy a committed checkpoint out of it with: ddpm checkpoint fetch ddpm-trainer-0.ddpm-trainer:7100 --insecure --step N --out COPY.db, N a committed step that ddpm status lists"},
		{[]string{"python3", "trainer", "--standalone"}, ""},
	} {
		// bash -c 'sleep 30; :' NAME ARGS...: a process whose command line ends with ARGS. The
		// script is two commands so that bash stays the process: given one, bash execs sleep,
		// and the command line becomes "sleep 30" (the test then failed when the poll below
		// missed bash's moment under load).
		p := exec.Command("bash", append([]string{"-c", "sleep 30; :"}, tc.args...)...)
		p.Dir = work
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		// Until bash has exec'd, /proc/PID/cmdline is this test binary's: wait for it (a
		// minute at most; 5 s then a hint of the test binary was a fork's luck under load).
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Process.Pid)); strings.Contains(string(b), "sleep 30; :") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bash (pid %d) did not exec within a minute", p.Process.Pid)
			}
		}
		if got := holderHint(p.Process.Pid); got != tc.want {
			t.Errorf("holderHint of %v:\n got %q\nwant %q", tc.args, got, tc.want)
		}
		p.Process.Kill()
		p.Wait()
	}
	if got := holderHint(os.Getpid()); got != "" {
		t.Errorf("holderHint of the test process: %q, want none", got)
	}
}

// TestCheckpointHelpStandalone: ddpm checkpoint --help says what to do about a standalone
// trainer's file, which no fetch can copy.
func TestCheckpointHelpStandalone(t *testing.T) {
	out, err := runCLI(t, context.Background(), nil, "checkpoint", "--help")
	const want = "trainer instead: ddpm checkpoint fetch TRAINER_ADDR --step N --out COPY.db (a standalone\ntrainer serves no copy: stop it, SIGTERM, and it resumes from its newest checkpoint when\nstarted again).\n"
	if err != nil || !strings.Contains(out, want) {
		t.Errorf("ddpm checkpoint --help: %v; want %q in:\n%s", err, want, out)
	}
}
