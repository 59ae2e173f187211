// Package metrics defines the Prometheus metrics of ddpm's processes (prometheus/client_golang):
// one registry per process, the trainer's per-step metrics, the coordinator's metrics read from
// its replicated state at scrape time, and the /metrics handler.
//
// Names follow Prometheus conventions: a ddpm_<role>_ prefix, base units in the name (_seconds,
// _bytes_per_second), _total for counters, no unit for dimensionless values (loss, gradient
// norm, learning rate).
//
// Nothing here imports the trainer or the coordinator: callers hand over plain numbers
// (StepSample, ClusterSnapshot), so the import graph keeps pointing from cmd and the roles down
// to internal.
package metrics

import (
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"ddpm/internal/version"
)

// Namespace prefixes every ddpm metric.
const Namespace = "ddpm"

// Quartiles are the label values of the timestep quartile label: quartile q covers
// t in [q*T/4, (q+1)*T/4) (improved-diffusion's logger splits the loss the same way).
var Quartiles = [4]string{"0", "1", "2", "3"}

// NewRegistry returns a fresh registry holding the Go runtime and process collectors. Each
// process (and each test) uses its own, never prometheus.DefaultRegisterer, so several roles can
// run in one process without clashing.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	return reg
}

// buildInfo is ddpm_build_info: always 1, labelled with this binary's version (internal/version,
// set at link time) and the Go version it was built with, so that a dashboard can tell which
// build each process runs (the usual Prometheus *_build_info pattern).
func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels say which ddpm build this process runs."}, []string{"version", "goversion"})
	g.WithLabelValues(version.Version, runtime.Version()).Set(1)
	return g
}

// Handler serves g in the Prometheus exposition formats (text by default, negotiated with the
// scraper). Errors while gathering are logged into the response and counted, not fatal.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
