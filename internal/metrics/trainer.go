package metrics

import (
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

// StepSample is what one rank measured for one completed optimizer step.
type StepSample struct {
	Step        int64 // steps completed
	Generation  uint64
	Rank, World int
	// Images is the number of samples the step consumed cluster-wide (the global batch).
	Images int
	// Loss is the global L_simple (eq. 14 averaged over the global batch, from the all-reduce).
	Loss float64
	// LossQuartiles is the global L_simple by timestep quartile (see Quartiles); NaN marks a
	// quartile that drew no sample this step and is left out.
	LossQuartiles [4]float64
	GradNorm      float64 // global gradient norm before clipping
	LR            float64 // learning rate used by this step (after warmup)
	Skipped       bool    // a non-finite gradient: no rank updated
	ImagesPerSec  float64
	// The step's wall time split: forward/backward and data (ComputeSec), the all-reduce call
	// (AllReduceSec) and the time between the previous step's end and this one's start
	// (WaitSec: reporting, checkpoints, waiting for an assignment). Seconds.
	ComputeSec, AllReduceSec, WaitSec float64
	// BusBW is the all-reduce's bus bandwidth in bytes/s as nccl-tests define it:
	// bytes/time * 2(N-1)/N; 0 for a world of one.
	BusBW float64
}

// Trainer holds one trainer process's metrics (ddpm_trainer_*). Create it with NewTrainer and
// call Observe after every step.
type Trainer struct {
	steps, skipped, images           prometheus.Counter
	step, generation, rank, world    prometheus.Gauge
	loss, gradNorm, lr, imagesPerSec prometheus.Gauge
	busBW                            prometheus.Gauge
	lossQ                            *prometheus.GaugeVec
	phase                            *prometheus.HistogramVec
	checkpoints                      prometheus.Counter
	checkpointStep                   prometheus.Gauge
	checkpointSave                   prometheus.Histogram
}

// StepPhaseBuckets are the bucket bounds of ddpm_trainer_step_phase_seconds: 1ms to about 16 min.
var StepPhaseBuckets = prometheus.ExponentialBuckets(0.001, 2, 20)

// NewTrainer creates the trainer's metrics and registers them with reg; it panics if they are
// registered there already (a programming error).
func NewTrainer(reg prometheus.Registerer) *Trainer {
	const sub = "trainer"
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: sub, Name: name, Help: help})
	}
	m := &Trainer{
		steps:        counter("steps_total", "Optimizer steps completed by this rank (skipped ones included)."),
		skipped:      counter("skipped_steps_total", "Steps skipped because some rank had a non-finite gradient."),
		images:       counter("images_total", "Samples consumed cluster-wide by the steps this rank took part in (global batch per step)."),
		step:         gauge("step", "Steps completed (the next step to run)."),
		generation:   gauge("generation", "Coordinator generation of the current ring."),
		rank:         gauge("rank", "This trainer's rank in the current ring."),
		world:        gauge("world_size", "Ranks in the current ring."),
		loss:         gauge("loss", "Global L_simple of the last step (mean over the global batch)."),
		gradNorm:     gauge("grad_norm", "Global gradient norm of the last step, before clipping."),
		lr:           gauge("learning_rate", "Learning rate of the last step (after warmup)."),
		imagesPerSec: gauge("images_per_second", "Global batch size divided by the last step's wall time."),
		busBW: gauge("allreduce_busbw_bytes_per_second",
			"Bus bandwidth of the last step's all-reduce (nccl-tests: bytes/time * 2(N-1)/N)."),
		lossQ: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Subsystem: sub, Name: "loss_by_timestep_quartile",
			Help: "Global L_simple of the last step over the samples whose t is in quartile q of [0, T)."}, []string{"quartile"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: sub, Name: "step_phase_seconds",
			Help:    "Wall time of each step's phases: compute (data, forward, backward), allreduce, wait (between steps).",
			Buckets: StepPhaseBuckets}, []string{"phase"}),
		checkpoints:    counter("checkpoints_total", "Checkpoints this trainer saved to its volume."),
		checkpointStep: gauge("checkpoint_step", "Step of the newest checkpoint this trainer saved."),
		checkpointSave: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Subsystem: sub, Name: "checkpoint_save_seconds",
			Help: "Wall time of each checkpoint save: snapshot, sha256 and the bbolt write with its fsyncs.", Buckets: StepPhaseBuckets}),
	}
	reg.MustRegister(m.steps, m.skipped, m.images, m.step, m.generation, m.rank, m.world, m.loss, m.gradNorm,
		m.lr, m.imagesPerSec, m.busBW, m.lossQ, m.phase, m.checkpoints, m.checkpointStep, m.checkpointSave)
	return m
}

// ObserveCheckpoint records one saved checkpoint: its step and the save's wall time in seconds.
func (m *Trainer) ObserveCheckpoint(step int64, seconds float64) {
	m.checkpoints.Inc()
	m.checkpointStep.Set(float64(step))
	if seconds >= 0 && !math.IsInf(seconds, 0) && !math.IsNaN(seconds) {
		m.checkpointSave.Observe(seconds)
	}
}

// Observe records one step. Non-finite values (a skipped step's loss) leave the gauges as they
// were, so a scrape never reads NaN from a single bad batch.
func (m *Trainer) Observe(s StepSample) {
	m.steps.Inc()
	if s.Skipped {
		m.skipped.Inc()
	}
	if s.Images > 0 {
		m.images.Add(float64(s.Images))
	}
	m.step.Set(float64(s.Step))
	m.generation.Set(float64(s.Generation))
	m.rank.Set(float64(s.Rank))
	m.world.Set(float64(s.World))
	setFinite(m.loss, s.Loss)
	setFinite(m.gradNorm, s.GradNorm)
	setFinite(m.lr, s.LR)
	setFinite(m.imagesPerSec, s.ImagesPerSec)
	setFinite(m.busBW, s.BusBW)
	for q, v := range s.LossQuartiles {
		setFinite(m.lossQ.WithLabelValues(Quartiles[q]), v)
	}
	for _, ph := range []struct {
		name string
		sec  float64
	}{{"compute", s.ComputeSec}, {"allreduce", s.AllReduceSec}, {"wait", s.WaitSec}} {
		if ph.sec >= 0 && !math.IsInf(ph.sec, 0) && !math.IsNaN(ph.sec) {
			m.phase.WithLabelValues(ph.name).Observe(ph.sec)
		}
	}
}

func setFinite(g prometheus.Gauge, v float64) {
	if !math.IsNaN(v) && !math.IsInf(v, 0) {
		g.Set(v)
	}
}
