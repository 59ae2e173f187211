package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ddpm/config"
	"ddpm/internal/localrun"
)

// TestLocalS24ResumePortHeld: `ddpm local --resume RUN` whose recorded port (coordinator-0's
// gRPC) a process that is not the run's listens on (here this test) is refused at once in one
// line naming that process's pid and command line and the way out, exit 2, nothing in RUN
// changed (local.lock not even created). It waited 65 s, then named the port without its holder
// ("port is in use: ... stop what holds it"), exit 1, having written local.lock.
func TestLocalS24ResumePortHeld(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.MinTrainers = 1 })
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	p := man.CoordinatorPorts[0].GRPC
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// This process's command line as /proc shows it: its words joined by spaces, cut at 80.
	cmdline := strings.Join(os.Args, " ")
	if r := []rune(cmdline); len(r) > 80 {
		cmdline = string(r[:77]) + "..."
	}
	before := treeTimes(t, run)
	t0 := time.Now()
	r := runLocalCmd(t, "--resume", run)
	took := time.Since(t0)
	wantOneLine(t, r, 2, fmt.Sprintf("ddpm: coordinator-0's port 127.0.0.1:%d (recorded in %s) is held by pid %d (%s), which is not this run's: stop it, then resume again",
		p, filepath.Join(run, localrun.ManifestFile), os.Getpid(), cmdline))
	if took > 20*time.Second {
		t.Errorf("the refusal took %v", took)
	}
	if after := treeTimes(t, run); !slices.Equal(before, after) {
		t.Errorf("the refused resume changed the run folder:\nbefore %q\nafter  %q", before, after)
	}
}
