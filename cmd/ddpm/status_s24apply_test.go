package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// statusLines runs `ddpm status --coordinator addr --insecure` as a process and returns its
// stdout lines with each run of spaces (tabwriter's column padding) cut to one.
func statusLines(t *testing.T, bin, addr string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "status", "--coordinator", addr, "--insecure")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ddpm status --coordinator %s: %v\n%s", addr, err, stderr.String())
	}
	var out []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		out = append(out, strings.Join(strings.Fields(l), " "))
	}
	return out
}

// TestApplyS24StatusNoLeader: `ddpm status` asked of the only replica up of three (c0, started
// with --preset, so it has a run config to submit once it leads) says no leader is known and
// why, and does not claim the run has no config. It printed "RUN no run configured" alone.
func TestApplyS24StatusNoLeader(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0, http0 := freeAddr(t), freeAddr(t), freeAddr(t)
	peers := "c0=" + raft0 + "=" + grpc0 + ",c1=" + freeAddr(t) + "=" + freeAddr(t) + ",c2=" + freeAddr(t) + "=" + freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0,
		"--http-addr", http0, "--peers", peers, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--insecure", "--preset", "mnist", "--steps", "20", "--checkpoint-every", "10")
	got := statusLines(t, bin, grpc0)
	want := []string{
		"RUN not known: no leader has submitted a run config",
		"leader none known to replica c0: a majority of the 3 replicas must be up and reach each other's raft ports (same --peers everywhere); start the others",
	}
	if len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("ddpm status printed\n%s\nwant it to begin\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestApplyS24StatusWaitsForTrainers: a run of min_trainers 2 with one member has no generation
// (world 0, status pending); `ddpm status` says what it waits for, which member joined, and what
// to do. It said nothing of the wait.
func TestApplyS24StatusWaitsForTrainers(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0, http0 := freeAddr(t), freeAddr(t), freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0,
		"--http-addr", http0, "--peers", "c0="+raft0+"="+grpc0, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--insecure", "--preset", "mnist", "--steps", "20", "--checkpoint-every", "10", "--min-trainers", "2")
	sec, err := tlsauth.Load(tlsauth.Config{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := coordinator.Dial([]string{grpc0}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := cli.State(ctx)
	for ; err != nil || st.Run == nil; st, err = cli.State(ctx) {
		if ctx.Err() != nil {
			t.Fatalf("no run config within 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := cli.Join(ctx, coordinator.JoinRequest{ID: "t0", Address: "127.0.0.1:7100", Version: builtVersion(t, http0)}); err != nil {
		t.Fatal(err)
	}
	got := statusLines(t, bin, grpc0)
	want := "waiting for 2 trainers (min_trainers), 1 joined: t0; start the missing trainers"
	if len(got) < 2 || got[0] != "RUN pending" || got[1] != want {
		t.Fatalf("ddpm status printed\n%s\nwant it to begin\nRUN pending\n%s", strings.Join(got, "\n"), want)
	}
}

// builtVersion is the version the coordinator at httpAddr was built as (its /metrics
// ddpm_build_info), which a joining trainer must send.
func builtVersion(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ddpm_build_info\{[^}]*version="([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no ddpm_build_info in /metrics")
	}
	return string(m[1])
}
