package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"ddpm/coordinator"
	"ddpm/internal/testutil"
	"ddpm/internal/tlsauth"
)

// TestOperatorS24DashboardWaitsForTrainers: a run with fewer members than min_trainers has no
// generation (world 0); /api/summary, which the dashboard shows as its status, says what it
// waits for: "for 2 trainers (min_trainers), none joined", then "..., 1 joined: t0" once one
// trainer has joined. It showed only "running" with world 0, as the member of a killed trainer's
// run was dropped and the other sat waiting in silence.
func TestOperatorS24DashboardWaitsForTrainers(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0, http0 := freeAddr(t), freeAddr(t), freeAddr(t)
	startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0,
		"--http-addr", http0, "--peers", "c0="+raft0+"="+grpc0, "--data-dir", filepath.Join(t.TempDir(), "c0"),
		"--bootstrap", "--insecure", "--preset", "mnist", "--steps", "20", "--checkpoint-every", "10", "--min-trainers", "2")
	get := func(path string) []byte {
		t.Helper()
		resp, err := http.Get("http://" + http0 + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	waitFor := func(want string) {
		t.Helper()
		var sum struct {
			Status, Waiting string
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			if err := json.Unmarshal(get("/api/summary"), &sum); err != nil {
				t.Fatal(err)
			}
			if sum.Waiting == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("/api/summary: status %q, waiting %q; want waiting %q", sum.Status, sum.Waiting, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("for 2 trainers (min_trainers), none joined")

	m := regexp.MustCompile(`ddpm_build_info\{[^}]*version="([^"]*)"`).FindSubmatch(get("/metrics"))
	if m == nil {
		t.Fatal("no ddpm_build_info in /metrics")
	}
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
	if _, err := cli.Join(ctx, coordinator.JoinRequest{ID: "t0", Address: "127.0.0.1:7100", Version: string(m[1])}); err != nil {
		t.Fatal(err)
	}
	waitFor("for 2 trainers (min_trainers), 1 joined: t0")
}
