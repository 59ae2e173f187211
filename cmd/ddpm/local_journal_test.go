package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/trainer"
)

// TestJournalStopsAfterFailedWrite: a loss.csv append that fails (here a descriptor that cannot
// be written; on a machine, a full disk) turns the journal off with one line instead of appending
// later rows after what may be half a row; the point is kept for the rewrite at the end.
func TestJournalStopsAfterFailedWrite(t *testing.T) {
	dir := t.TempDir()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	m := newLocalMonitor(run, dir, &out, true)
	path := filepath.Join(dir, localrun.LossCSV)
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	m.journal = f
	var line bytes.Buffer
	trainer.Progress{Step: 3, Loss: 0.5, LR: 1e-4, GradNorm: 1}.Log(slog.New(slog.NewJSONHandler(&line, nil)))
	m.line("trainer-0", bytes.TrimSpace(line.Bytes()))
	if m.journal != nil {
		t.Fatal("the journal is still on after a failed write")
	}
	if want := "ddpm local: appending to loss.csv failed ("; !strings.HasPrefix(out.String(), want) ||
		!strings.HasSuffix(out.String(), "); it is written whole at the end of the run\n") {
		t.Fatalf("output %q", out.String())
	}
	if p, ok := m.points[3]; !ok || p.Loss != 0.5 {
		t.Fatalf("point of step 3 not kept: %+v", m.points)
	}
}
