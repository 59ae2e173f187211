package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// TestApplyS24TrainerListenInUse: a `ddpm trainer` process whose --listen or --http-addr port
// is held (here by this test's process) exits 2 with one line naming the flag, the address and
// the holder's pid and command line, and leaves no --data-dir behind. It exited 1 with
// net.Listen's "bind: address already in use", naming nothing, after creating the volume and
// its checkpoints.db.
func TestApplyS24TrainerListenInUse(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, flag := range []string{"--listen", "--http-addr"} {
		vol := filepath.Join(t.TempDir(), "vol")
		args := []string{"trainer", "--preset", "mnist", "--coordinator", closedAddr(t), "--data-dir", vol, "--insecure"}
		if flag == "--listen" {
			args = append(args, "--listen", addr)
		} else {
			args = append(args, "--listen", closedAddr(t), "--http-addr", addr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err = cmd.Run()
		cancel()
		var ee *exec.ExitError
		want := "ddpm: trainer: cannot listen on " + flag + " " + addr + ": the port is in use by pid " + strconv.Itoa(os.Getpid()) + " (" +
			procCommand(t, os.Getpid()) + "): stop that process, or give another " + flag + "\n"
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || stderr.String() != want {
			t.Errorf("trainer with %s %s held: %v, stderr %q\nwant exit status 2, stderr %q", flag, addr, err, stderr.String(), want)
		}
		if _, err := os.Stat(vol); !errors.Is(err, os.ErrNotExist) {
			es, _ := os.ReadDir(vol)
			t.Errorf("trainer refused for %s left --data-dir %s (%v, entries %v)", flag, vol, err, es)
		}
	}
}

// TestApplyS24TrainerWaitsForRankLogged: a trainer process that joins a run of min_trainers 2
// alone gets an assignment with no rank (world 0) and logs once "waiting for a rank" with the
// generation, world 0 and why. It sat silent for as long as it waited.
func TestApplyS24TrainerWaitsForRankLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a trainer process")
	}
	bin := testutil.DDPMBinary(t)
	dir := t.TempDir()
	run, cfg := procRun(t, dir, 8, 2, 2, 5*time.Second, nil)
	certs := tlsauthtest.Dir(t)
	coord, _ := startReplica(t, run, "dev", certs)
	p := startTrainerProc(t, bin, dir, "t0", coord, cfg, certs)
	const why = "no generation runs: fewer members than min_trainers, or none of them holds the newest checkpoint (ddpm status says which)"
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, _ := os.ReadFile(p.log)
		var got []map[string]any
		for _, line := range strings.Split(string(b), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "waiting for a rank" {
				got = append(got, r)
			}
		}
		if len(got) > 0 {
			r := got[0]
			if len(got) != 1 || r["level"] != "INFO" || r["generation"] != 0.0 || r["world"] != 0.0 || r["why"] != why {
				t.Fatalf("logged %v\nwant one INFO \"waiting for a rank\", generation 0, world 0, why %q", got, why)
			}
			// Once per generation: the assignment stream re-sends world 0 (heartbeats, the
			// replica's state changes) without another line.
			time.Sleep(3 * time.Second)
			b, _ = os.ReadFile(p.log)
			if n := strings.Count(string(b), `"msg":"waiting for a rank"`); n != 1 {
				t.Fatalf("%d \"waiting for a rank\" lines in one generation, want 1:\n%s", n, b)
			}
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("the trainer exited (%v) before logging \"waiting for a rank\"; stderr:\n%s\nlog:\n%s", p.err, p.stderr.String(), b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"waiting for a rank\" within 60 s; log:\n%s", b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
