package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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

// TestOperatorS24RaftDBRemoved: a replica whose --data-dir is deleted while it runs (rm -rf by
// mistake) goes on with its open raft.db, which is lost when it stops; it says so once at
// ERROR and /readyz answers 503 with the same line. It stayed ready, silently.
func TestOperatorS24RaftDBRemoved(t *testing.T) {
	bin := testutil.DDPMBinary(t)
	raft0, grpc0, http0 := freeAddr(t), freeAddr(t), freeAddr(t)
	dir := filepath.Join(t.TempDir(), "c0")
	c0 := startOpCoordinator(t, bin, 30*time.Second, "coordinator", "--id", "c0", "--raft-addr", raft0, "--grpc-addr", grpc0,
		"--http-addr", http0, "--peers", "c0="+raft0+"="+grpc0, "--data-dir", dir, "--bootstrap", "--insecure")
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + http0 + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for code, body := readyz(); code != http.StatusOK || body != "ready c0 leader\n"; code, body = readyz() {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q, want 200 ready c0 leader", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	why := filepath.Join(dir, "raft.db") + " removed while this replica runs: it goes on with its open file, which is lost " +
		"when it stops; stopped, it starts again empty and catches up from the other replicas (if they are up)"
	deadline = time.Now().Add(20 * time.Second)
	for code, body := readyz(); code != http.StatusServiceUnavailable || body != "not ready c0 leader: "+why+"\n"; code, body = readyz() {
		if time.Now().After(deadline) {
			t.Fatalf("/readyz %d %q, want 503 not ready c0 leader: %s", code, body, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for logged := false; !logged; time.Sleep(100 * time.Millisecond) {
		for _, line := range strings.Split(c0.log(), "\n") {
			var r map[string]any
			if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == coordinator.MsgRaftDBGone {
				if r["level"] != "ERROR" || r["why"] != why || r["data_dir"] != dir {
					t.Fatalf("logged %v\nwant ERROR, why %q, data_dir %q", r, why, dir)
				}
				logged = true
			}
		}
		if !logged && time.Now().After(deadline) {
			t.Fatalf("no ERROR %q within 20 s; log:\n%s", coordinator.MsgRaftDBGone, c0.log())
		}
	}
	c0.stop(t)
}
