package metrics_test

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"ddpm/internal/metrics"
	"ddpm/internal/version"
)

// scrape GETs /metrics from a real HTTP server on loopback and parses the text exposition with
// Prometheus' own parser.
func scrape(t *testing.T, h http.Handler) (string, map[string]*dto.MetricFamily) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, body)
	}
	return string(body), fams
}

// value returns the value of the family's sample whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric %s missing", name)
	}
	for _, m := range f.Metric {
		match := true
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Histogram != nil:
			return m.Histogram.GetSampleSum()
		}
	}
	t.Fatalf("metric %s%v missing", name, want)
	return 0
}

// checkConventions runs Prometheus' linter over the exposition and checks our own rules: the
// ddpm_ prefix, _total exactly on counters, and no unit-less names for time or bandwidth.
func checkConventions(t *testing.T, body string, fams map[string]*dto.MetricFamily) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for name, f := range fams {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		if !strings.HasPrefix(name, "ddpm_") {
			t.Errorf("%s: no ddpm_ prefix", name)
		}
		isCounter := f.GetType() == dto.MetricType_COUNTER
		if isCounter != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: type %v; counters and only counters end in _total", name, f.GetType())
		}
		if regexp.MustCompile(`(^|_)(time|duration|latency|busbw|bandwidth)(_|$)`).MatchString(name) &&
			!regexp.MustCompile(`_(seconds|bytes_per_second)$`).MatchString(name) {
			t.Errorf("%s: a time or bandwidth without its unit", name)
		}
	}
}

func TestTrainerMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	m := metrics.NewTrainer(reg)
	m.Observe(metrics.StepSample{Step: 10, Generation: 3, Rank: 1, World: 4, Images: 128, Loss: 0.25,
		LossQuartiles: [4]float64{0.5, 0.2, 0.1, 0.05}, GradNorm: 1.5, LR: 2e-5, ImagesPerSec: 64,
		ComputeSec: 1.25, AllReduceSec: 0.5, WaitSec: 0.25, BusBW: 3e9})
	// A skipped step: non-finite loss and an empty quartile leave those gauges as they were.
	m.Observe(metrics.StepSample{Step: 11, Generation: 3, Rank: 1, World: 4, Images: 128, Loss: math.NaN(),
		LossQuartiles: [4]float64{0.4, math.NaN(), 0.1, 0.05}, GradNorm: math.Inf(1), LR: 2.2e-5, Skipped: true,
		ImagesPerSec: 60, ComputeSec: 1, AllReduceSec: 0.5, WaitSec: 0, BusBW: 2e9})
	m.ObserveCheckpoint(10, 0.75)
	m.ObserveCheckpoint(20, 1.25)
	body, fams := scrape(t, metrics.Handler(reg))
	checkConventions(t, body, fams)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ddpm_trainer_steps_total", nil, 2},
		{"ddpm_trainer_skipped_steps_total", nil, 1},
		{"ddpm_trainer_images_total", nil, 256},
		{"ddpm_trainer_step", nil, 11},
		{"ddpm_trainer_generation", nil, 3},
		{"ddpm_trainer_rank", nil, 1},
		{"ddpm_trainer_world_size", nil, 4},
		{"ddpm_trainer_loss", nil, 0.25},
		{"ddpm_trainer_loss_by_timestep_quartile", map[string]string{"quartile": "0"}, 0.4},
		{"ddpm_trainer_loss_by_timestep_quartile", map[string]string{"quartile": "1"}, 0.2},
		{"ddpm_trainer_grad_norm", nil, 1.5},
		{"ddpm_trainer_learning_rate", nil, 2.2e-5},
		{"ddpm_trainer_images_per_second", nil, 60},
		{"ddpm_trainer_allreduce_busbw_bytes_per_second", nil, 2e9},
		{"ddpm_trainer_step_phase_seconds", map[string]string{"phase": "compute"}, 2.25},
		{"ddpm_trainer_step_phase_seconds", map[string]string{"phase": "allreduce"}, 1},
		{"ddpm_trainer_step_phase_seconds", map[string]string{"phase": "wait"}, 0.25},
		{"ddpm_trainer_checkpoints_total", nil, 2},
		{"ddpm_trainer_checkpoint_step", nil, 20},
		{"ddpm_trainer_checkpoint_save_seconds", nil, 2},
		{"ddpm_build_info", map[string]string{"version": version.Version, "goversion": runtime.Version()}, 1},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n := fams["ddpm_trainer_step_phase_seconds"].Metric[0].Histogram.GetSampleCount(); n != 2 {
		t.Errorf("step_phase_seconds count %d, want 2", n)
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the registry lacks the Go runtime collector")
	}
}

func TestCoordinatorMetrics(t *testing.T) {
	reg := metrics.NewRegistry()
	snap := metrics.ClusterSnapshot{Replica: "c1", Leader: true, Term: 4, AppliedIndex: 120, Applied: 118,
		Status: "running", Step: 700, TotalSteps: 2000, Generation: 2, World: 3, Active: 3, Waiting: 1,
		Checkpoints: 2, LastCheckpoint: 650, LossHistoryPoints: 600}
	metrics.NewCoordinator(reg, func() metrics.ClusterSnapshot { return snap })
	body, fams := scrape(t, metrics.Handler(reg))
	checkConventions(t, body, fams)
	if _, ok := fams["ddpm_coordinator_loss"]; ok {
		t.Error("loss reported before any loss point")
	}
	snap.HasLast, snap.Loss, snap.LossQuartiles, snap.BusBW, snap.AllReduceSec = true, 0.125, [4]float64{1, 0.5, 0.25, 0.125}, 5e8, 0.75
	body, fams = scrape(t, metrics.Handler(reg))
	checkConventions(t, body, fams)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ddpm_coordinator_raft_term", nil, 4},
		{"ddpm_coordinator_raft_applied_index", nil, 120},
		{"ddpm_coordinator_raft_leader", nil, 1},
		{"ddpm_coordinator_commands_applied_total", nil, 118},
		{"ddpm_coordinator_run_status", map[string]string{"status": "running"}, 1},
		{"ddpm_coordinator_run_status", map[string]string{"status": "failed"}, 0},
		{"ddpm_coordinator_step", nil, 700},
		{"ddpm_coordinator_total_steps", nil, 2000},
		{"ddpm_coordinator_generation", nil, 2},
		{"ddpm_coordinator_world_size", nil, 3},
		{"ddpm_coordinator_members", map[string]string{"state": "active"}, 3},
		{"ddpm_coordinator_members", map[string]string{"state": "waiting"}, 1},
		{"ddpm_coordinator_checkpoints_committed", nil, 2},
		{"ddpm_coordinator_last_checkpoint_step", nil, 650},
		{"ddpm_coordinator_loss_history_points", nil, 600},
		{"ddpm_coordinator_loss", nil, 0.125},
		{"ddpm_coordinator_loss_by_timestep_quartile", map[string]string{"quartile": "2"}, 0.25},
		{"ddpm_coordinator_allreduce_busbw_bytes_per_second", nil, 5e8},
		{"ddpm_coordinator_step_phase_seconds", map[string]string{"phase": "allreduce"}, 0.75},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
