package main

import (
	"bytes"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/viz"
	"ddpm/trainer"
)

// TestLossCSVKeepsSkippedStep: ddpm local's monitor takes the trainers' per-step lines (written
// by trainer.Progress.Log through slog's JSON handler, as a trainer process writes them). Step 2
// was skipped with a NaN loss, step 3 with a finite loss (a trainer that reported its gradient
// norm as 0): loss.csv keeps a row for each, marked by grad_norm NaN, as it is journaled, after
// the step is replayed (no second row) and when rewritten at the end; a resume reads it back;
// loss.png is drawn from steps 1 and 4. Before, step 2's line (loss "!ERROR:json: unsupported
// value: NaN") did not parse and loss.csv had no row for it, and step 3's row read as an
// ordinary step with gradient norm 0.
func TestLossCSVKeepsSkippedStep(t *testing.T) {
	dir := t.TempDir()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps = 4
	var out bytes.Buffer
	m := newLocalMonitor(run, dir, &out, true)
	if err := m.openJournal(); err != nil {
		t.Fatal(err)
	}
	steps := []trainer.Progress{
		{Step: 1, Loss: 0.5, LR: 1e-4, GradNorm: 1.5, World: 2},
		{Step: 2, Loss: math.NaN(), LR: 1e-4, GradNorm: math.NaN(), Skipped: true, World: 2},
		{Step: 3, Loss: 0.4, LR: 1e-4, GradNorm: 0, Skipped: true, World: 2},
		{Step: 4, Loss: 0.3, LR: 1e-4, GradNorm: 1.25, World: 2},
	}
	feed := func(p trainer.Progress) {
		var line bytes.Buffer
		p.Log(slog.New(slog.NewJSONHandler(&line, nil)))
		m.line("trainer-0", bytes.TrimSpace(line.Bytes()))
	}
	for _, p := range steps {
		feed(p)
	}
	feed(steps[1]) // a replay of the skipped step (after a re-ring) adds no row
	path := filepath.Join(dir, localrun.LossCSV)
	want := "step,loss,lr,grad_norm\n1,0.5,0.0001,1.5\n2,NaN,0.0001,NaN\n3,0.4,0.0001,NaN\n4,0.3,0.0001,1.25\n"
	if got, err := os.ReadFile(path); err != nil || string(got) != want {
		t.Fatalf("journaled loss.csv:\n%s(%v)\nwant:\n%s", got, err, want)
	}
	if err := m.writeLoss(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != want {
		t.Fatalf("loss.csv at the end:\n%s(%v)\nwant:\n%s", got, err, want)
	}
	if fi, err := os.Stat(filepath.Join(dir, localrun.LossPNG)); err != nil || fi.Size() == 0 {
		t.Fatalf("loss.png: %v", err)
	}
	var drawn []int64
	for _, p := range plotted(m.sorted()) {
		drawn = append(drawn, p.Step)
	}
	if len(drawn) != 2 || drawn[0] != 1 || drawn[1] != 4 {
		t.Fatalf("loss.png draws steps %v, want [1 4]", drawn)
	}
	// --resume reads the rows back, the skipped ones included.
	pts, err := viz.ReadLossCSV(path)
	if err != nil || len(pts) != 4 || !math.IsNaN(pts[1].Loss) || !math.IsNaN(pts[2].GradNorm) || pts[2].Loss != 0.4 {
		t.Fatalf("ReadLossCSV: %+v, %v", pts, err)
	}
	r := newLocalMonitor(run, dir, &out, true)
	if err := r.loadEarlier(); err != nil {
		t.Fatal(err)
	}
	if err := r.openJournal(); err != nil {
		t.Fatal(err)
	}
	r.closeJournal()
	if got, err := os.ReadFile(path); err != nil || string(got) != want {
		t.Fatalf("loss.csv after a resume:\n%s(%v)\nwant:\n%s", got, err, want)
	}
	if out.Len() != 0 {
		t.Fatalf("output: %q", out.String())
	}
}

// TestFinalLossNotOfSkippedStep: ddpm local's last line names the loss of the last step that
// trained the model; a last step skipped for a non-finite gradient said "final loss NaN at step
// 4".
func TestFinalLossNotOfSkippedStep(t *testing.T) {
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	run.Steps = 4
	var out bytes.Buffer
	m := newLocalMonitor(run, t.TempDir(), &out, true)
	for _, p := range []trainer.Progress{
		{Step: 1, Loss: 0.5, LR: 1e-4, GradNorm: 1.5, World: 1},
		{Step: 2, Loss: 0.25, LR: 1e-4, GradNorm: 1.25, World: 1},
		{Step: 3, Loss: 0.4, LR: 1e-4, GradNorm: math.NaN(), Skipped: true, World: 1},
		{Step: 4, Loss: math.NaN(), LR: 1e-4, GradNorm: math.NaN(), Skipped: true, World: 1},
	} {
		var line bytes.Buffer
		p.Log(slog.New(slog.NewJSONHandler(&line, nil)))
		m.line("trainer-0", bytes.TrimSpace(line.Bytes()))
	}
	if got, want := m.finalLoss(), "0.25000 at step 2"; got != want {
		t.Fatalf("finalLoss() = %q, want %q", got, want)
	}
}
