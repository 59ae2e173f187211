package web_test

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ddpm/coordinator/fsm"
	"ddpm/coordinator/web"
)

// The rollback scenario of the tests below: trainer-a commits checkpoints at steps 100 and 200,
// then an operator rolls the run back to 100 at rollbackAt, abandoning 200.
var (
	sha100, sha200 = strings.Repeat("1a", 32), strings.Repeat("2b", 32)
	rollbackAt     = t0 + 205*stepNS
)

// commitTwo reports steps 1..200 with checkpoints at 100 and 200 (one rank, so each commits at once).
func (c *cluster) commitTwo(i int, gen uint64) {
	c.t.Helper()
	c.report(i, gen, 1, 200)
	for _, ck := range []struct {
		step int64
		sha  string
	}{{100, sha100}, {200, sha200}} {
		c.propose(i, fsm.Command{Kind: fsm.KindCheckpoint, Time: t0 + ck.step*stepNS, Checkpoint: &fsm.CheckpointReport{
			ID: "trainer-a", Generation: gen, Step: ck.step, SHA256: ck.sha, Size: 99}})
	}
}

func (c *cluster) rollback(i int, to int64) {
	c.t.Helper()
	c.propose(i, fsm.Command{Kind: fsm.KindRollback, Time: rollbackAt, Rollback: &fsm.Rollback{ToStep: to}})
}

// TestSummaryAbandoned: /api/summary lists no abandoned checkpoint (an empty list, not null)
// before a rollback and exactly the one it gave up after.
func TestSummaryAbandoned(t *testing.T) {
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.commitTwo(l, gen)
	var sum web.Summary
	getJSON(t, c.srvs[l].URL+"/api/summary", &sum)
	if sum.Abandoned == nil || len(sum.Abandoned) != 0 || len(sum.Checkpoints) != 2 {
		t.Fatalf("before the rollback: abandoned %#v, %d checkpoints", sum.Abandoned, len(sum.Checkpoints))
	}
	c.rollback(l, 100)
	getJSON(t, c.srvs[l].URL+"/api/summary", &sum)
	want := []fsm.AbandonedCheckpoint{{Checkpoint: fsm.Checkpoint{Step: 200, SHA256: sha200, Size: 99, Generation: gen,
		Holders: []string{"trainer-a"}, Time: t0 + 200*stepNS}, RolledBackTo: 100, AbandonedAt: rollbackAt}}
	if !reflect.DeepEqual(sum.Abandoned, want) {
		t.Fatalf("abandoned %+v\nwant %+v", sum.Abandoned, want)
	}
	if len(sum.Checkpoints) != 1 || sum.Checkpoints[0].Step != 100 {
		t.Fatalf("checkpoints after the rollback: %+v", sum.Checkpoints)
	}
}

// TestDashboardAbandonedInChromium: the dashboard's "Abandoned checkpoints" section stays hidden
// while no rollback happened and, after one, shows the abandoned checkpoint's step, sha256
// prefix, the step rolled back to and the rollback's time, without a reload.
func TestDashboardAbandonedInChromium(t *testing.T) {
	ctx := newBrowser(t)
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.commitTwo(l, gen)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(c.srvs[l].URL+"/")); err != nil {
		t.Fatal(err)
	}
	type section struct {
		Polled bool
		Hidden bool
		Title  string
		Rows   [][]string
		When   string // the page's rendering of rollbackAt
	}
	read := func() section {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[section](`(function () {
			var sec = document.getElementById("abandoned-section");
			return {polled: !!(window.ddpm && window.ddpm.summary), hidden: sec.hidden,
				title: sec.querySelector("h2").firstChild.textContent.trim(),
				rows: Array.from(sec.querySelectorAll("tr")).map(function (tr) {
					return Array.from(tr.children).map(function (c) { return c.textContent; });
				}),
				when: new Date(`+strconv.FormatInt(rollbackAt, 10)+` / 1e6).toLocaleString()};
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitFor := func(what string, ok func(section) bool) section {
		t.Helper()
		for {
			s := read()
			if ok(s) {
				return s
			}
			select {
			case <-ctx.Done():
				t.Fatalf("waiting for %s: page shows %+v", what, s)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	before := waitFor("the first summary", func(s section) bool { return s.Polled })
	if !before.Hidden {
		t.Fatalf("abandoned section shown before any rollback: %+v", before)
	}
	c.rollback(l, 100)
	after := waitFor("the abandoned checkpoint", func(s section) bool { return !s.Hidden && len(s.Rows) > 1 })
	want := [][]string{{"step", "sha256", "rolled back to", "when"}, {"200", sha200[:16] + "…", "100", after.When}}
	if after.Title != "Abandoned checkpoints" || !reflect.DeepEqual(after.Rows, want) {
		t.Fatalf("abandoned section %q rows %q\nwant %q", after.Title, after.Rows, want)
	}
}
