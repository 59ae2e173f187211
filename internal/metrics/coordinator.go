package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// RunStatuses are the values of ddpm_coordinator_run_status's status label (the fsm's statuses;
// "none" before a run config is submitted).
var RunStatuses = []string{"none", "pending", "running", "succeeded", "failed"}

// ClusterSnapshot is what the coordinator's metrics report: one replica's view of the replicated
// state, read at scrape time. Every replica serves the same cluster figures (they come from the
// raft-replicated state), so the numbers survive a leader change.
type ClusterSnapshot struct {
	Replica      string // this replica's id
	Leader       bool   // this replica is the raft leader
	Term         uint64 // raft term
	AppliedIndex uint64 // raft index of the last applied entry
	Applied      uint64 // commands the state machine applied since the cluster began

	Status            string // one of RunStatuses ("" counts as "none")
	Step, TotalSteps  int64
	Generation        uint64
	World             int
	Active, Waiting   int   // members by state
	Checkpoints       int   // committed checkpoints retained
	LastCheckpoint    int64 // step of the newest committed checkpoint; -1 when none
	LossHistoryPoints int

	// HasLast is false until the first loss point; the fields below are those of the newest
	// point of the loss history (a merged point holds means over its reports).
	HasLast                           bool
	Loss                              float64
	LossQuartiles                     [4]float64
	GradNorm, LR, ImagesPerSec, BusBW float64
	ComputeSec, AllReduceSec, WaitSec float64
}

// coordinatorCollector turns a ClusterSnapshot into metrics at every scrape.
type coordinatorCollector struct {
	snap  func() ClusterSnapshot
	descs map[string]*prometheus.Desc
}

// NewCoordinator registers with reg a collector that calls snap at every scrape and reports it
// as ddpm_coordinator_* metrics. It panics if reg already holds them.
func NewCoordinator(reg prometheus.Registerer, snap func() ClusterSnapshot) {
	if snap == nil {
		panic("metrics: NewCoordinator with a nil snapshot func")
	}
	c := &coordinatorCollector{snap: snap, descs: map[string]*prometheus.Desc{}}
	d := func(name, help string, labels ...string) {
		c.descs[name] = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "coordinator", name), help, labels, nil)
	}
	d("raft_term", "Current raft term as this replica knows it.")
	d("raft_applied_index", "Raft index of the last entry this replica's state machine applied.")
	d("raft_leader", "1 if this replica is the raft leader, else 0.")
	d("commands_applied_total", "Commands the replicated state machine has applied since the cluster began.")
	d("run_status", "1 for the run's current status, 0 for the others.", "status")
	d("step", "Furthest step reported in the current generation.")
	d("total_steps", "Steps the run trains for.")
	d("generation", "Current generation number.")
	d("world_size", "Ranks in the current generation's ring (0: waiting for trainers).")
	d("members", "Trainers known to the coordinator, by state.", "state")
	d("checkpoints_committed", "Committed checkpoints retained.")
	d("last_checkpoint_step", "Step of the newest committed checkpoint (-1: none).")
	d("loss_history_points", "Points in the bounded, down-sampled loss history.")
	d("loss", "Global L_simple of the newest loss-history point.")
	d("loss_by_timestep_quartile", "Global L_simple by timestep quartile, newest loss-history point.", "quartile")
	d("grad_norm", "Global gradient norm before clipping, newest loss-history point.")
	d("learning_rate", "Learning rate, newest loss-history point.")
	d("images_per_second", "Cluster throughput over the trained steps of the newest loss-history point (NaN: only skipped steps).")
	d("allreduce_busbw_bytes_per_second", "All-reduce bus bandwidth, newest loss-history point.")
	d("step_phase_seconds", "Per-step wall time by phase (compute, allreduce, wait), newest loss-history point.", "phase")
	reg.MustRegister(c)
}

// Describe implements prometheus.Collector.
func (c *coordinatorCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *coordinatorCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	g := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	g("raft_term", float64(s.Term))
	g("raft_applied_index", float64(s.AppliedIndex))
	g("raft_leader", b2f(s.Leader))
	ch <- prometheus.MustNewConstMetric(c.descs["commands_applied_total"], prometheus.CounterValue, float64(s.Applied))
	status := s.Status
	if status == "" {
		status = "none"
	}
	for _, st := range RunStatuses {
		g("run_status", b2f(st == status), st)
	}
	g("step", float64(s.Step))
	g("total_steps", float64(s.TotalSteps))
	g("generation", float64(s.Generation))
	g("world_size", float64(s.World))
	g("members", float64(s.Active), "active")
	g("members", float64(s.Waiting), "waiting")
	g("checkpoints_committed", float64(s.Checkpoints))
	g("last_checkpoint_step", float64(s.LastCheckpoint))
	g("loss_history_points", float64(s.LossHistoryPoints))
	if !s.HasLast {
		return
	}
	g("loss", s.Loss)
	for q, v := range s.LossQuartiles {
		if !math.IsNaN(v) { // NaN: no report behind the last point had a sample in it
			g("loss_by_timestep_quartile", v, Quartiles[q])
		}
	}
	g("grad_norm", s.GradNorm)
	g("learning_rate", s.LR)
	g("images_per_second", s.ImagesPerSec)
	g("allreduce_busbw_bytes_per_second", s.BusBW)
	g("step_phase_seconds", s.ComputeSec, "compute")
	g("step_phase_seconds", s.AllReduceSec, "allreduce")
	g("step_phase_seconds", s.WaitSec, "wait")
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
