package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator"
	"ddpm/coordinator/fsm"
	"ddpm/internal/tlsauth/tlsauthtest"
	"ddpm/internal/viz"
)

// TestLossShowsSkippedSteps: a step the trainers skipped for a non-finite gradient, reported
// with skipped set (and its NaN loss and gradient norm), appears in `ddpm loss` as a row with
// "-" for the loss and the gradient norm and 1 in SKIPPED, in --csv as a row with loss and
// grad_norm NaN (ddpm local's loss.csv mark), and in `ddpm status` when it is the newest point.
// Its IMAGES/S is "-" too (no image was trained; it read 0.0).
// The coordinators used to refuse such a report, so the history had no mark for the step.
func TestLossShowsSkippedSteps(t *testing.T) {
	addr, cli, gen := startMonitoredNode(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.ReportProgress(ctx, &api.ReportProgressRequest{Id: "trainer-a", Generation: gen, Step: 3, Skipped: true,
		Loss: math.NaN(), GradNorm: math.NaN(), LossQuartiles: []float64{math.NaN(), 1, 1, 1}, Lr: 3e-4}); err != nil {
		t.Fatal(err)
	}

	out, err := runDDPM(t, "status", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"loss none at step 3: skipped for a non-finite gradient (lr 0.0003)",
		"skipped 1 step of the loss history skipped for a non-finite gradient (ddpm loss: SKIPPED)"} {
		if !strings.Contains(flat, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out, err = runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rows []string
	for _, l := range lines {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	want := []string{"STEP LOSS MIN MAX Q0 Q1 Q2 Q3 GRAD NORM LR IMAGES/S REPORTS SKIPPED",
		"1 1.1 1.1 1.1 4 3 2 1 1 0.0001 32.0 1 0",
		"2 0.6 0.6 0.6 4 3 2 1 1 0.0002 32.0 1 0",
		"3 - - - - - - - - 0.0003 - 1 1"}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("loss table:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}

	csvPath := filepath.Join(t.TempDir(), "loss.csv")
	if _, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts, "--csv", csvPath); err != nil {
		t.Fatal(err)
	}
	pts, err := viz.ReadLossCSV(csvPath)
	if err != nil || len(pts) != 3 {
		t.Fatalf("csv: %+v, %v", pts, err)
	}
	if p := pts[2]; p.Step != 3 || !math.IsNaN(p.Loss) || !math.IsNaN(p.GradNorm) || p.LR != 3e-4 {
		t.Errorf("skipped step's csv row %+v, want loss and grad_norm NaN", p)
	}
	if p := pts[1]; p != (viz.LossPoint{Step: 2, Loss: 0.6, LR: 2e-4, GradNorm: 1}) {
		t.Errorf("trained step's csv row %+v", p)
	}
}

// TestLossThroughputOverTrainedSteps: a real coordinator is sent 1025 reports, the odd steps
// trained at 64 images/s and the even ones skipped (a skipped step reports 0), so that its
// 1024-point history merges neighbours pairwise: each merged point covers one skipped and one
// trained step. `ddpm loss` shows such a point's IMAGES/S over its trained step, 64.0; it showed
// the mean with the skipped step's 0, 32.0, as if the cluster had run at half speed.
func TestLossThroughputOverTrainedSteps(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps, run.CheckpointEvery = 2000, 1000
	monitorCerts = tlsauthtest.Dir(t)
	addr, cli := startReplica(t, run, "test", monitorCerts)
	joined := joinWhenLeading(t, cli, coordinator.JoinRequest{ID: "trainer-a", Address: "127.0.0.1:7000", Version: "test", ConfigHash: run.Hash()})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = fsm.DefaultLossCapacity + 1
	for s := int64(1); s <= n; s++ {
		r := &api.ReportProgressRequest{Id: "trainer-a", Generation: joined.Generation, Step: s, Loss: 0.5,
			LossQuartiles: []float64{1, 1, 1, 1}, GradNorm: 1, Lr: 1e-4, ImagesPerSec: 64}
		if s%2 == 0 {
			r.Skipped, r.Loss, r.GradNorm, r.ImagesPerSec = true, math.NaN(), math.NaN(), 0
		}
		if _, err := cli.ReportProgress(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runDDPM(t, "loss", "--coordinator", addr, "--certs", monitorCerts)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var rows []string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Join(strings.Fields(l), " "))
	}
	// Step 1 stays as it was; steps 2-3, 4-5, ..., 1022-1023 merged; 1024 (skipped) and 1025 not.
	want := []string{"1 0.5 0.5 0.5 1 1 1 1 1 0.0001 64.0 1 0"}
	for s := 3; s <= 1023; s += 2 {
		want = append(want, fmt.Sprintf("%d 0.5 0.5 0.5 1 1 1 1 1 0.0001 64.0 2 1", s))
	}
	want = append(want, "1024 - - - - - - - - 0.0001 - 1 1", "1025 0.5 0.5 0.5 1 1 1 1 1 0.0001 64.0 1 0")
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), out)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Fatalf("row %d: %q, want %q", i, rows[i], want[i])
		}
	}
}

// TestStatusThroughputOverTrainedSteps: when the newest loss point is a merged one (a rollback
// truncated the history back to it), `ddpm status` gives its images/s over its trained steps: of
// two trained steps at 64 and 96 images/s and two skipped ones, 80.0 (it said the mean over all
// four, 40.0).
func TestStatusThroughputOverTrainedSteps(t *testing.T) {
	// With room for 6 points, steps 2-3 and 4-5 merge at step 7, then those two at step 9.
	h := fsm.NewLossHistory(6)
	for s, ips := range []float64{10, 64, 0, 96, 0, 10, 10, 10, 10} {
		p := fsm.LossPoint{Step: int64(s + 1), Loss: 0.5, GradNorm: 1, LR: 1e-4, ImagesPerSec: ips}
		if ips == 0 {
			p.Skipped = 1
		}
		h.Add(p)
	}
	h.Truncate(5)
	if p := h.Points[len(h.Points)-1]; p.Step != 5 || p.Count != 4 || p.Skipped != 2 || p.ImagesPerSec != 40 {
		t.Fatalf("newest point after the rollback %+v, want steps 2-5 merged (images/s 40 in the state)", p)
	}
	st := fsm.New()
	st.Loss = h
	var out bytes.Buffer
	if err := writeStatus(&out, &api.StatusResponse{}, st, ""); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out.String()), " ")
	if want := "loss 0.5 at step 5 (lr 0.0001, grad norm 1, 80.0 images/s)"; !strings.Contains(flat, want) {
		t.Errorf("status lacks %q:\n%s", want, out.String())
	}
}
