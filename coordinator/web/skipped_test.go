package web_test

import (
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"ddpm/coordinator/fsm"
	"ddpm/coordinator/web"
)

// reportSkipped proposes rank 0's report of step, skipped for a non-finite gradient.
func (c *cluster) reportSkipped(i int, gen uint64, step int64) {
	c.t.Helper()
	p := point(step)
	c.propose(i, fsm.Command{Kind: fsm.KindProgress, Time: t0 + step*stepNS, Progress: &fsm.Progress{
		ID: "trainer-a", Generation: gen, Step: step, Point: fsm.LossPoint{Skipped: 1, LR: p.LR, ComputeSec: p.ComputeSec}}})
}

// TestLossDocSkipped: /api/loss carries a skipped step's point marked "skipped" (count 1,
// skipped 1) with no loss, between its trained neighbours.
func TestLossDocSkipped(t *testing.T) {
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.report(l, gen, 1, 3)
	c.reportSkipped(l, gen, 4)
	c.report(l, gen, 5, 5)
	var doc web.LossDoc
	getJSON(t, c.srvs[l].URL+"/api/loss?from=3&to=5", &doc)
	if len(doc.Points) != 3 || doc.ReportsTotal != 5 {
		t.Fatalf("points %+v, reports %d", doc.Points, doc.ReportsTotal)
	}
	if p := doc.Points[1]; p.Step != 4 || p.Count != 1 || p.Skipped != 1 || p.HasLoss() || p.Loss != 0 || p.LR != point(4).LR {
		t.Errorf("skipped point %+v", p)
	}
	if doc.Points[0].Skipped != 0 || doc.Points[2].Skipped != 0 || doc.Points[2].Loss != point(5).Loss {
		t.Errorf("trained neighbours %+v, %+v", doc.Points[0], doc.Points[2])
	}

	// /metrics gives a newest point of a skipped step a NaN loss and gradient norm, not 0.
	c.reportSkipped(l, gen, 6)
	resp, err := http.Get(c.srvs[l].URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for name, nan := range map[string]bool{"ddpm_coordinator_loss": true, "ddpm_coordinator_grad_norm": true, "ddpm_coordinator_learning_rate": false} {
		f, ok := fams[name]
		if !ok || len(f.Metric) != 1 {
			t.Errorf("%s missing", name)
			continue
		}
		if got := f.Metric[0].GetGauge().GetValue(); math.IsNaN(got) != nan || (!nan && got != point(6).LR) {
			t.Errorf("%s = %v after a skipped step", name, got)
		}
	}
}

// TestDashboardSkippedInChromium: after a skipped step the dashboard's run summary says that the
// newest step was skipped (no loss, no gradient norm) and counts the skipped steps, and the loss
// chart has a gap (null) at that step rather than a loss of 0.
func TestDashboardSkippedInChromium(t *testing.T) {
	ctx := newBrowser(t)
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.report(l, gen, 1, 5)
	c.reportSkipped(l, gen, 6)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(c.srvs[l].URL+"/")); err != nil {
		t.Fatal(err)
	}
	type view struct {
		Run  map[string]string
		Loss []*float64 // the loss chart's per-report series
	}
	var v view
	for {
		var err error
		v, err = chromedp.Run(ctx, chromedp.Evaluate[view](`(function () {
			var run = {}, dl = document.getElementById("run");
			dl.querySelectorAll("dt").forEach(function (dt) { run[dt.textContent] = dt.nextElementSibling.textContent; });
			var p = window.ddpm && window.ddpm.plotted();
			return {run: run, loss: p && p.loss ? p.loss[1] : []};
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Loss) == 6 && v.Run["skipped steps"] != "" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for 6 points: page shows %+v", v)
		case <-time.After(100 * time.Millisecond):
		}
	}
	for k, want := range map[string]string{"loss (newest)": "none: step 6 skipped (non-finite gradient)", "grad norm": "-", "skipped steps": "1"} {
		if v.Run[k] != want {
			t.Errorf("run summary %q = %q, want %q", k, v.Run[k], want)
		}
	}
	if v.Loss[5] != nil || v.Loss[4] == nil || *v.Loss[4] != point(5).Loss {
		t.Errorf("loss chart at steps 5, 6: %v, %v; want %v, a gap", v.Loss[4], v.Loss[5], point(5).Loss)
	}
}

// skipEveryOther reports step 1, then steps 3..1026 with the odd ones skipped (images/s 0) and
// the even ones trained at point(s).ImagesPerSec (64); the 1025th point merges the history's
// neighbours pairwise into points of steps (3,4), (5,6), ..., each one skipped and one trained
// step. It then commits checkpoints at steps 200 and 300 and rolls back to 200, so the newest point is
// the merged one of steps 199-200 (count 2, skipped 1, images/s 32 in the state).
func (c *cluster) skipEveryOther(i int, gen uint64) {
	c.t.Helper()
	c.report(i, gen, 1, 1)
	for s := int64(3); s <= fsm.DefaultLossCapacity+2; s++ {
		if s%2 == 1 {
			c.reportSkipped(i, gen, s)
		} else {
			c.report(i, gen, s, s)
		}
	}
	for _, ck := range []struct {
		step int64
		sha  string
	}{{200, sha100}, {300, sha200}} {
		c.propose(i, fsm.Command{Kind: fsm.KindCheckpoint, Time: t0 + 1030*stepNS, Checkpoint: &fsm.CheckpointReport{
			ID: "trainer-a", Generation: gen, Step: ck.step, SHA256: ck.sha, Size: 99}})
	}
	c.rollback(i, 200)
	var doc web.LossDoc
	getJSON(c.t, c.srvs[i].URL+"/api/loss?from=199", &doc)
	if len(doc.Points) != 1 || doc.Points[0].Step != 200 || doc.Points[0].Count != 2 || doc.Points[0].Skipped != 1 ||
		doc.Points[0].ImagesPerSec != 32 {
		c.t.Fatalf("newest points after the rollback: %+v, want steps 199-200 merged", doc.Points)
	}
}

// TestThroughputOverTrainedSteps: when the newest loss point merges a skipped step (images/s 0)
// with a trained one at 64 images/s, /api/summary's images_per_sec and /metrics'
// ddpm_coordinator_images_per_second give the throughput over the trained step, 64 (/metrics
// said 32, the mean with the skipped step's 0; the summary had no such figure).
func TestThroughputOverTrainedSteps(t *testing.T) {
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.skipEveryOther(l, gen)
	var sum web.Summary
	getJSON(t, c.srvs[l].URL+"/api/summary", &sum)
	if sum.ImagesPerSec == nil || *sum.ImagesPerSec != 64 {
		t.Errorf("summary images_per_sec %v, want 64", sum.ImagesPerSec)
	}
	if got := metricValue(t, c.srvs[l].URL, "ddpm_coordinator_images_per_second"); got != 64 {
		t.Errorf("ddpm_coordinator_images_per_second = %v, want 64", got)
	}
	// A newest point of a skipped step only has no throughput: null and NaN, not 0.
	c.reportSkipped(l, gen+1, 201)
	sum = web.Summary{}
	getJSON(t, c.srvs[l].URL+"/api/summary", &sum)
	if sum.ImagesPerSec != nil {
		t.Errorf("summary images_per_sec %v after a skipped step, want null", *sum.ImagesPerSec)
	}
	if got := metricValue(t, c.srvs[l].URL, "ddpm_coordinator_images_per_second"); !math.IsNaN(got) {
		t.Errorf("ddpm_coordinator_images_per_second = %v after a skipped step, want NaN", got)
	}
}

// metricValue reads the one sample of the gauge name from base's /metrics.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := fams[name]
	if !ok || len(f.Metric) != 1 {
		t.Fatalf("%s: %d samples, want 1", name, len(f.GetMetric()))
	}
	return f.Metric[0].GetGauge().GetValue()
}

// TestDashboardThroughputInChromium: the dashboard's "images/s" is the throughput over the newest
// point's trained steps (64.0 for the merged skipped and trained steps of skipEveryOther; it
// showed 32.0).
func TestDashboardThroughputInChromium(t *testing.T) {
	ctx := newBrowser(t)
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.skipEveryOther(l, gen)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(c.srvs[l].URL+"/")); err != nil {
		t.Fatal(err)
	}
	var run map[string]string
	for {
		var err error
		run, err = chromedp.Run(ctx, chromedp.Evaluate[map[string]string](`(function () {
			var run = {}, dl = document.getElementById("run");
			dl.querySelectorAll("dt").forEach(function (dt) { run[dt.textContent] = dt.nextElementSibling.textContent; });
			return run;
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		if run["images/s"] != "" {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for the run summary: page shows %+v", run)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if run["images/s"] != "64.0" {
		t.Errorf("images/s %q, want 64.0", run["images/s"])
	}
}
