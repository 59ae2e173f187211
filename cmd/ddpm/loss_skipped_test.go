package main

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/internal/viz"
)

// TestLossShowsSkippedSteps: a step the trainers skipped for a non-finite gradient, reported
// with skipped set (and its NaN loss and gradient norm), appears in `ddpm loss` as a row with
// "-" for the loss and the gradient norm and 1 in SKIPPED, in --csv as a row with loss and
// grad_norm NaN (ddpm local's loss.csv mark), and in `ddpm status` when it is the newest point.
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
		"3 - - - - - - - - 0.0003 0.0 1 1"}
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
