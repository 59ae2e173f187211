package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
)

// TestPolishS24LossFollowInterrupt: Ctrl-C (SIGINT) of `ddpm loss --follow` on a running run is
// exit status 130 with one line saying where it stopped, as every other ddpm command (local,
// sample, eval) and tail -f; it exited 0 without a word, the status of a run that ended.
func TestPolishS24LossFollowInterrupt(t *testing.T) {
	grpcAddr, _, _ := startMonitoredNode(t, 5)
	cmd := exec.Command(testutil.DDPMBinary(t), "loss", "--follow", "--every", "200ms", "--coordinator", grpcAddr, "--certs", monitorCerts)
	var o, e testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(o.String(), "\n5 ") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no row of step 5 in 30 s; stdout:\n%s\nstderr:\n%s", o.String(), e.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("ddpm loss --follow did not end within 20 s of SIGINT")
	}
	want := "ddpm: loss: interrupted after step 5; the run goes on\n"
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted || e.String() != want {
		t.Fatalf("after SIGINT: exit %d, stderr %q; want exit 130, stderr %q", code, e.String(), want)
	}
}
