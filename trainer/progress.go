package trainer

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"ddpm/internal/metrics"
)

// ProgressMsg is the log message of the one line a trainer writes per completed step. With slog's
// JSON handler (the default when stdout is not a terminal) the line is an object whose fields are
// those of Progress; `ddpm local` reads these lines for its progress bar and loss.csv.
const ProgressMsg = "step"

// Progress is one completed optimizer step as seen by one rank. Loss is the global L_simple (the
// all-reduced loss sum over the whole global batch divided by its size), so every rank reports
// the same value for the same step.
type Progress struct {
	Step       int64   `json:"step"` // steps completed, i.e. the index of this step + 1
	Loss       float64 `json:"loss"`
	LR         float64 `json:"lr"`
	GradNorm   float64 `json:"grad_norm"` // global gradient norm before clipping; NaN when Skipped
	Skipped    bool    `json:"skipped"`   // a non-finite gradient somewhere: nobody updated
	ImagesPerS float64 `json:"images_per_s"`
	Generation uint64  `json:"generation"`
	Rank       int     `json:"rank"`
	World      int     `json:"world"`
	// LossQuartiles is the global L_simple by timestep quartile of [0, T) (NaN: no sample).
	LossQuartiles [4]float64 `json:"-"`
	// The step's wall time: data+forward+backward, the all-reduce, and the gap since the
	// previous step (reports, checkpoints); seconds. BusBW is the all-reduce's bus bandwidth
	// in bytes/s (nccl-tests' definition; 0 for a world of one).
	ComputeSec   float64 `json:"compute_s"`
	AllReduceSec float64 `json:"allreduce_s"`
	WaitSec      float64 `json:"wait_s"`
	BusBW        float64 `json:"busbw"`
}

// Sample converts p for the Prometheus metrics of internal/metrics.
func (p Progress) Sample(globalBatch int) metrics.StepSample {
	return metrics.StepSample{Step: p.Step, Generation: p.Generation, Rank: p.Rank, World: p.World,
		Images: globalBatch, Loss: p.Loss, LossQuartiles: p.LossQuartiles, GradNorm: p.GradNorm, LR: p.LR,
		Skipped: p.Skipped, ImagesPerSec: p.ImagesPerS, ComputeSec: p.ComputeSec, AllReduceSec: p.AllReduceSec,
		WaitSec: p.WaitSec, BusBW: p.BusBW}
}

// Log writes p as the per-step line. A Loss or GradNorm that is not finite (a skipped step) is
// written as the text "NaN", "+Inf" or "-Inf": JSON has no number for it, and slog's JSON handler
// would write an error message in its place, which no reader could take for the step.
func (p Progress) Log(l *slog.Logger) {
	l.Info(ProgressMsg, "step", p.Step, "loss", logFloat(p.Loss), "lr", p.LR, "grad_norm", logFloat(p.GradNorm),
		"skipped", p.Skipped, "images_per_s", p.ImagesPerS, "generation", p.Generation,
		"rank", p.Rank, "world", p.World, "compute_s", p.ComputeSec, "allreduce_s", p.AllReduceSec,
		"wait_s", p.WaitSec, "busbw", p.BusBW)
}

// logFloat is v as a log value: a number, or its text when v is NaN or infinite.
func logFloat(v float64) slog.Value {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return slog.StringValue(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return slog.Float64Value(v)
}

// loggedFloat reads a value logFloat wrote: a JSON number, or the string "NaN", "+Inf" or "-Inf".
type loggedFloat float64

func (f *loggedFloat) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN", "+Inf", "-Inf":
			v, _ := strconv.ParseFloat(s, 64)
			*f = loggedFloat(v)
			return nil
		}
		return fmt.Errorf("trainer: %q is not a number", s)
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = loggedFloat(v)
	return nil
}

// ParseProgress reads a per-step line written by Log through slog's JSON handler, a skipped
// step's non-finite loss and gradient norm included. ok is false for any other line.
func ParseProgress(line []byte) (p Progress, ok bool) {
	var probe struct {
		Msg string `json:"msg"`
		Progress
		// Shallower than Progress's fields of the same names, so these take them.
		Loss     loggedFloat `json:"loss"`
		GradNorm loggedFloat `json:"grad_norm"`
	}
	if len(line) == 0 || line[0] != '{' {
		return p, false
	}
	if err := json.Unmarshal(line, &probe); err != nil || probe.Msg != ProgressMsg {
		return p, false
	}
	p = probe.Progress
	p.Loss, p.GradNorm = float64(probe.Loss), float64(probe.GradNorm)
	return p, true
}
