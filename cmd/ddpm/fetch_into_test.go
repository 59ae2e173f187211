package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"ddpm/checkpoint"
	"ddpm/config"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/trainer"
)

// fetchCkpt is a small checkpoint of run cfg at step whose parameters are all v.
func fetchCkpt(cfg string, step int64, v float32) *checkpoint.Checkpoint {
	p := make([]float32, 16)
	for i := range p {
		p[i] = v
	}
	return &checkpoint.Checkpoint{Step: step, Generation: 1, ConfigHash: cfg, Preset: "tiny",
		Tensors: []checkpoint.TensorInfo{{Name: "w", Shape: []int{16}, Len: 16}}, Params: p, EMA: p}
}

// servingCkpts starts a real CheckpointTransfer server on loopback over a fresh store holding
// cs, committed; it returns the address and the sha256 of each checkpoint.
func servingCkpts(t *testing.T, cs ...*checkpoint.Checkpoint) (string, []string) {
	t.Helper()
	st, err := checkpoint.Open(filepath.Join(t.TempDir(), "holder.db"), checkpoint.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var sums []string
	for _, c := range cs {
		sha, err := st.Save(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.MarkCommitted(c.Step); err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sha)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(tlsauthtest.Insecure(t).ServerOptions()...)
	checkpoint.RegisterTransfer(srv, st)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), sums
}

// TestCheckpointFetchInto: ddpm checkpoint fetch into an existing checkpoint file used to
// merge any run's checkpoint into it (list then showed one run of two runs' steps, and sample
// read the other run's weights with the first run's run.yaml); a folder as --out failed as
// "(invalid database): corrupt checkpoint". Now: a step of the same run is added without
// --force; a file of another run, or beside a run.yaml of another run, is refused naming both
// config hashes, the file untouched; a step held with other bytes is replaced only with
// --force; a folder is refused in one line.
func TestCheckpointFetchInto(t *testing.T) {
	addrA, sumA := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 1), fetchCkpt("run-a-0123456789", 75, 2))
	addrB, _ := servingCkpts(t, fetchCkpt("run-b-9876543210", 50, 3))
	addrC, sumC := servingCkpts(t, fetchCkpt("run-a-0123456789", 50, 4)) // run a's step 50, other bytes
	dir := t.TempDir()
	out := filepath.Join(dir, "checkpoints.db")
	fetch := func(addr string, step int64, to string, extra ...string) (string, []string, error) {
		args := append([]string{"checkpoint", "fetch", addr, "--step", fmt.Sprint(step), "--out", to, "--insecure"}, extra...)
		stdout, err := runCLI(t, context.Background(), nil, args...)
		return stdout, args, err
	}
	if got, args, err := fetch(addrA, 50, out); err != nil || got != fmt.Sprintf("%s: step 50 (sha256 %s) -> %s\n", addrA, sumA[0][:16], out) {
		t.Fatalf("ddpm %v: %q, %v", args, got, err)
	}
	if got, args, err := fetch(addrA, 75, out); err != nil || got != fmt.Sprintf("%s: step 75 (sha256 %s) -> %s\n", addrA, sumA[1][:16], out) {
		t.Fatalf("ddpm %v (a step of the same run, no --force): %q, %v", args, got, err)
	}
	before := fileSum(t, out)
	_, args, err := fetch(addrB, 50, out, "--force")
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s holds checkpoints of run config run-a-012345 (step 50), step 50 at %s belongs to run config run-b-987654; fetch it into a new file", out, addrB))
	_, args, err = fetch(addrC, 50, out)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s already holds step 50 with sha256 %s, %s's has sha256 %s; give --force to replace it", out, sumA[0][:16], addrC, sumC[0][:16]))
	if fileSum(t, out) != before {
		t.Errorf("%s changed by refused fetches", out)
	}
	if got, args, err := fetch(addrC, 50, out, "--force"); err != nil || got != fmt.Sprintf("%s: step 50 (sha256 %s) -> %s\n", addrC, sumC[0][:16], out) {
		t.Fatalf("ddpm %v: %q, %v", args, got, err)
	}
	st, err := checkpoint.Open(out, checkpoint.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	list, err := st.List()
	st.Close()
	if err != nil || len(list) != 2 || list[0].SHA256 != sumC[0] || !list[0].Committed || list[1].SHA256 != sumA[1] || !list[1].Committed {
		t.Fatalf("%s after the fetches: %+v, %v; want step 50 %s and step 75 %s, committed", out, list, err, sumC[0], sumA[1])
	}

	_, args, err = fetch(addrA, 50, dir)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: --out %s is a folder; name the checkpoint file to write (e.g. %s)", dir, filepath.Join(dir, "checkpoints.db")))

	// A new file in a trainer folder whose run.yaml names another run.
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	vol := t.TempDir()
	if err := os.WriteFile(filepath.Join(vol, trainer.ConfigFile), run.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	into := filepath.Join(vol, trainer.CheckpointFile)
	_, args, err = fetch(addrA, 50, into)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s is beside %s of run config %.12s, step 50 at %s belongs to run config run-a-012345; fetch it into a new folder", into, filepath.Join(vol, trainer.ConfigFile), run.Hash(), addrA))
	mustNotExist(t, into)

	// A new, empty folder inside that trainer folder: the run.yaml read with the file is the one
	// of the folder above, not one beside it (the line said "beside" and "a new folder", which
	// is what the user had done).
	sub := filepath.Join(vol, "new")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	into = filepath.Join(sub, "f.db")
	_, args, err = fetch(addrA, 50, into)
	wantExit(t, args, err, 2, fmt.Sprintf("checkpoint fetch: %s would be read with %s (the folder above) of run config %.12s, step 50 at %s belongs to run config run-a-012345; fetch it into a folder with no other run's run.yaml in it or above it", into, filepath.Join(vol, trainer.ConfigFile), run.Hash(), addrA))
	mustNotExist(t, into)
}
