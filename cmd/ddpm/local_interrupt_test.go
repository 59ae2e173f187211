package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// TestLocalInterruptNoWarning: Ctrl-C (SIGINT) of a two-trainer `ddpm local` stops both trainers
// together: each finishes its step and leaves, and neither log holds a warning. local stopped
// the trainers one after the other, so trainer-1 ran into its next step's all-reduce with
// trainer-0 gone and logged `WARN generation ended err="allreduce: peer lost: ... context
// canceled"` for an expected stop.
func TestLocalInterruptNoWarning(t *testing.T) {
	// A heartbeat timeout a busy machine keeps to (250 ms dropped trainers that were only slow,
	// with a warning of their own).
	run := makeLocalRun(t, 2, func(r *config.Run) {
		r.Steps, r.CheckpointEvery, r.HeartbeatTimeout = 100000, 50, config.Duration(10*time.Second)
	})
	cmd, out := localCommand(t, "--resume", run, "--quiet")
	live := &lockedLog{}
	cmd.Stdout, cmd.Stderr = live, live
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitStepped(t, run, "trainer-0", live)
	waitStepped(t, run, "trainer-1", live)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	werr := cmd.Wait()
	out.WriteString(live.String())
	r := finish(t, cmd, out, werr)
	if want := "ddpm: interrupted; continue with: ddpm local --resume " + run; r.code != 130 || r.lastLine() != want {
		t.Fatalf("exit %d with\n%s\nwant exit 130 ending in %q", r.code, r.out, want)
	}
	for _, name := range []string{"trainer-0", "trainer-1"} {
		b, err := os.ReadFile(filepath.Join(run, localrun.LogsDir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte(`"msg":"`+MsgLeft+`"`)) {
			t.Errorf("%s did not leave cleanly:\n%s", name, b)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// tlsauth's warning of a peer that hung up mid-handshake (EOF) as it stopped is
			// internal/tlsauth's business.
			if (strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`)) && !strings.Contains(line, `"msg":"tlsauth: refused connection"`) {
				t.Errorf("%s logged a warning for a clean stop: %s", name, line)
			}
		}
	}
	if t.Failed() {
		t.Logf("ddpm local:\n%s", r.out)
	}
}
