package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"ddpm/config"
	"ddpm/internal/localrun"
	"ddpm/internal/testutil"
	"ddpm/internal/viz"
)

// treeTimes lists every path under dir with its size and modification time: what a command
// that must change nothing leaves as it was.
func treeTimes(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s %d %d", p, fi.Size(), fi.ModTime().UnixNano()))
		}
		return nil
	})
	return out
}

// TestLocalS24ResumeFinished: `ddpm local --resume RUN` of a run that finished (a real 4-step
// run of one trainer, its step-4 checkpoint committed) starts no process and says so in two
// lines: the final step and loss (loss.csv's), where loss.png (and samples.png) are, and the
// commands that go further; exit 0, nothing changed. It said "resuming RUN from committed
// checkpoint at step 4", started the coordinators and trainers again, and redrew samples.png.
// A finished run whose samples.png is missing (its end cut short while sampling) gets that grid
// drawn from the final checkpoint alone, the same grid `ddpm sample` draws with the run's seed,
// and no process started. The same command with --out RUN says the run in RUN finished. (The
// first session also shows a checkpoint's sha256 on the terminal
// cut to 12 digits.)
func TestLocalS24ResumeFinished(t *testing.T) {
	run := makeLocalRun(t, 1, func(r *config.Run) { r.MinTrainers = 1 })
	r := runLocalCmd(t, "--resume", run)
	if r.code != 0 || !strings.Contains(r.out, "ddpm local: done: ") {
		t.Fatalf("the run: exit %d\n%s", r.code, r.out)
	}
	// On the terminal a sha256 shows its first 12 digits (the run's line shows its config so);
	// the log keeps it whole. It was all 64, in every trainer's joining, joined and checkpoint
	// lines.
	saved := regexp.MustCompile(`(?m)^\[trainer-0\] checkpoint saved seconds=\S+ sha256="([0-9a-f]+)" step=4$`).FindStringSubmatch(r.out)
	logb, _ := os.ReadFile(filepath.Join(run, localrun.LogsDir, "trainer-0.log"))
	if saved == nil || len(saved[1]) != 12 || !regexp.MustCompile(`"sha256":"`+saved[1]+`[0-9a-f]{52}"`).Match(logb) {
		t.Errorf("the run's terminal lines\n%s\nhave no [trainer-0] checkpoint saved ... sha256=\"(12 digits of the log's sha256)\" step=4", r.out)
	}
	pts, err := viz.ReadLossCSV(filepath.Join(run, localrun.LossCSV))
	if err != nil || len(pts) == 0 || pts[len(pts)-1].Step != 4 {
		t.Fatalf("loss.csv: %v %v", pts, err)
	}
	loss := fmt.Sprintf("%.5f", pts[len(pts)-1].Loss)
	further := fmt.Sprintf("ddpm local: nothing to resume; other samples: ddpm sample --checkpoint %s%%s --seed 1 --out FILE.png; to train on (more steps, other settings): ddpm checkpoint export %s --out %s-weights.safetensors, then ddpm local --init %s-weights.safetensors --out NEW", run, run, run, run)

	// Finished, with its loss curve (the run draws no samples: --samples 0 in local.json).
	before := treeTimes(t, run)
	r = runLocalCmd(t, "--resume", run)
	want := fmt.Sprintf("ddpm local: %s finished at step 4 (final loss %s): loss curve in %s\n", run, loss, filepath.Join(run, localrun.LossPNG)) + fmt.Sprintf(further, "")
	if r.code != 0 || strings.TrimSpace(r.out) != want {
		t.Fatalf("exit %d with\n%s\nwant exit 0 with\n%s", r.code, r.out, want)
	}
	if after := treeTimes(t, run); !slices.Equal(before, after) {
		t.Fatalf("the finished run's folder changed:\nbefore %q\nafter  %q", before, after)
	}

	// The same command again with --out: the run is there, and over. It said "already holds
	// this run ...; continue it with --resume RUN", which only said it finished.
	wantOneLine(t, runLocalCmd(t, "--config", filepath.Join(run, localrun.ConfigFile), "--trainers", "1", "--coordinators", "1", "--samples", "0", "--out", run),
		2, fmt.Sprintf("ddpm: output folder %s already holds this run, which finished at step 4 (ddpm local --resume %s says where its samples and loss curve are); choose another --out for a new run", run, run))
	if after := treeTimes(t, run); !slices.Equal(before, after) {
		t.Fatalf("the refused run changed the folder:\nbefore %q\nafter  %q", before, after)
	}

	// Its samples.png missing (the run's local.json asks for 4): drawn, nothing else started.
	man, err := localrun.ReadManifest(run)
	if err != nil {
		t.Fatal(err)
	}
	four := 4
	man.Samples = &four
	if err := localrun.WriteManifest(run, man); err != nil {
		t.Fatal(err)
	}
	// loss.png gone too (the supervisor killed before the end): redrawn from loss.csv.
	lossPNG := filepath.Join(run, localrun.LossPNG)
	if err := os.Remove(lossPNG); err != nil {
		t.Fatal(err)
	}
	logs := treeTimes(t, filepath.Join(run, localrun.LogsDir))
	r = runLocalCmd(t, "--resume", run)
	samples := filepath.Join(run, localrun.SamplesPNG)
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	first := fmt.Sprintf("ddpm local: %s finished training at step 4 (trainer-0 holds the final checkpoint); writing its missing loss.png and samples.png, no cluster needed", run)
	wrote := regexp.MustCompile(`^ddpm local: wrote ` + regexp.QuoteMeta(samples) + ` \(4 samples of the EMA weights in \d+s\)$`)
	done := fmt.Sprintf("ddpm local: done: %s; final loss %s at step 4", run, loss)
	if n := len(lines); r.code != 0 || n < 4 || lines[0] != first || lines[1] != "ddpm local: wrote "+lossPNG || !wrote.MatchString(lines[n-2]) || lines[n-1] != done {
		t.Fatalf("exit %d with\n%s\nwant exit 0, first line\n%s\nthen ddpm sample's, ddpm local: wrote %s (...), and last\n%s", r.code, r.out, first, samples, done)
	}
	if _, err := os.Stat(lossPNG); err != nil {
		t.Errorf("loss.png: %v", err)
	}
	if after := treeTimes(t, filepath.Join(run, localrun.LogsDir)); !slices.Equal(logs, after) {
		t.Errorf("drawing the samples started processes:\nbefore %q\nafter  %q", logs, after)
	}
	other := filepath.Join(t.TempDir(), "other.png")
	if out, err := exec.Command(testutil.DDPMBinary(t), "sample", "--checkpoint", run, "--n", "4", "--out", other).CombinedOutput(); err != nil {
		t.Fatalf("ddpm sample: %v\n%s", err, out)
	}
	a, errA := os.ReadFile(samples)
	b, errB := os.ReadFile(other)
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Errorf("samples.png (%d bytes, %v) is not ddpm sample's grid of the run's seed (%d bytes, %v)", len(a), errA, len(b), errB)
	}

	// And then finished, with both.
	before = treeTimes(t, run)
	r = runLocalCmd(t, "--resume", run)
	want = fmt.Sprintf("ddpm local: %s finished at step 4 (final loss %s): samples in %s, loss curve in %s\n", run, loss, samples, filepath.Join(run, localrun.LossPNG)) + fmt.Sprintf(further, " --n 4")
	if r.code != 0 || strings.TrimSpace(r.out) != want {
		t.Fatalf("exit %d with\n%s\nwant exit 0 with\n%s", r.code, r.out, want)
	}
	if after := treeTimes(t, run); !slices.Equal(before, after) {
		t.Fatalf("the finished run's folder changed:\nbefore %q\nafter  %q", before, after)
	}
}
