package coordinator

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"ddpm/api"
	"ddpm/config"
	"ddpm/coordinator/fsm"
)

// TestSkippedStepReport: a trainer's report of a step skipped for a non-finite gradient
// (ReportProgressRequest.skipped, with the NaN loss and gradient norm the step really had),
// sent through a follower, is forwarded to the leader and recorded on every replica as a point
// marked skipped, without a loss. Such a report used to be refused (a non-finite value) or not
// sent at all, so the cluster's history had no mark for the step. A skipped report's other
// metrics must still be finite, and an unmarked NaN is still refused. A skipped report's
// images/s is recorded as 0 whatever it says (48 here; it was kept), so that merged points give
// the trained steps' throughput exactly (fsm.LossPoint.TrainedImagesPerSec).
func TestSkippedStepReport(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	nodes, c := dialFollower(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run, _ := config.Preset("mnist")
	run.MinTrainers, run.MaxTrainers, run.Steps, run.CheckpointEvery = 1, 1, 100, 50
	if _, err := c.SubmitRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	j, err := c.Join(ctx, JoinRequest{ID: "a", Address: "10.0.0.1:1", Version: "v7", ConfigHash: run.Hash()})
	if err != nil || j.Generation != 1 {
		t.Fatalf("join: %+v %v", j, err)
	}
	for _, r := range []*api.ReportProgressRequest{
		{Step: 1, Loss: 0.5, LossQuartiles: []float64{0.4, 0.5, 0.6, 0.7}, GradNorm: 2, Lr: 1e-4, ImagesPerSec: 64},
		{Step: 2, Skipped: true, Loss: math.NaN(), LossQuartiles: []float64{math.NaN(), -1, math.Inf(1), 0.5}, GradNorm: math.NaN(), Lr: 2e-4, ComputeSec: 0.25, ImagesPerSec: 48},
		{Step: 3, Loss: 0.25, GradNorm: 1, Lr: 3e-4},
	} {
		r.Id, r.Incarnation, r.Generation = "a", j.Incarnation, j.Generation
		if _, err := c.ReportProgress(ctx, r); err != nil {
			t.Fatalf("step %d: %v", r.Step, err)
		}
	}
	for _, tc := range []struct {
		req  *api.ReportProgressRequest
		want string
	}{
		{&api.ReportProgressRequest{Id: "a", Generation: 1, Step: 4, GradNorm: math.NaN()}, "bad command: grad_norm is NaN, want a finite number"},
		{&api.ReportProgressRequest{Id: "a", Generation: 1, Step: 4, Skipped: true, GradNorm: math.NaN(), Lr: math.Inf(-1)}, "bad command: lr is -Inf, want a finite number"},
	} {
		if _, err := c.ReportProgress(ctx, tc.req); !errors.Is(err, fsm.ErrBadCommand) || err.Error() != tc.want {
			t.Errorf("%v: %v, want %q", tc.req, err, tc.want)
		}
	}

	want := []fsm.LossPoint{
		{Step: 1, Count: 1, Loss: 0.5, LossMin: 0.5, LossMax: 0.5, LossQuartiles: [4]float64{0.4, 0.5, 0.6, 0.7}, GradNorm: 2, LR: 1e-4, ImagesPerSec: 64},
		{Step: 2, Count: 1, Skipped: 1, QuartilesMissing: [4]int64{1, 1, 1, 1}, LR: 2e-4, ComputeSec: 0.25},
		{Step: 3, Count: 1, Loss: 0.25, LossMin: 0.25, LossMax: 0.25, QuartilesMissing: [4]int64{1, 1, 1, 1}, GradNorm: 1, LR: 3e-4},
	}
	same := func(got []fsm.LossPoint) bool {
		if len(got) != len(want) {
			return false
		}
		for i, p := range got {
			p.Time = 0 // the leader's clock
			if p != want[i] {
				return false
			}
		}
		return true
	}
	// Every replica applied the same points (followers catch up within a moment), and the
	// follower answers them in its state.
	for _, n := range nodes {
		var got []fsm.LossPoint
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
			n.Replica.View(func(s *fsm.State) { got = append(got[:0], s.Loss.Points...) })
			if same(got) || time.Now().After(deadline) {
				break
			}
		}
		if !same(got) {
			t.Errorf("replica %s: %+v", n.Replica.ID(), got)
		}
	}
	if st, err := c.State(ctx); err != nil || !same(st.Loss.Points) {
		t.Errorf("history through the follower: %+v (%v), want %+v", st.Loss.Points, err, want)
	}
}
