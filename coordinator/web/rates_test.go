package web_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ddpm/coordinator/fsm"
)

// TestDashboardRatesBoundedInChromium: under trainer churn (twelve trainer ids, four at a time,
// each joining, heartbeating and leaving), the dashboard keeps step-rate series for the current
// members and for the four departed trainers seen last only, and remembers the previous heartbeat
// of current members only: at the end 8 series (the second and third group's) and 5 ids (the
// third group and trainer-a). It used to keep a series and a heartbeat per id ever seen (12 and
// 13), growing for as long as the page stayed open.
func TestDashboardRatesBoundedInChromium(t *testing.T) {
	ctx := newBrowser(t)
	c := newCluster(t, 1)
	l := c.leader()
	c.start(l)
	if _, err := chromedp.Run(ctx, chromedp.Navigate(c.srvs[l].URL+"/")); err != nil {
		t.Fatal(err)
	}
	type page struct {
		Rates    []string // ids with a step-rate series
		LastSeen []string // ids whose previous heartbeat the page holds
		Series   int      // arrays of the step-rate chart: x, then one per series
	}
	read := func() page {
		t.Helper()
		p, err := chromedp.Run(ctx, chromedp.Evaluate[page](`(function () {
			var p = window.ddpm && window.ddpm.plotted ? window.ddpm.plotted() : {};
			return {rates: window.ddpm ? Object.keys(window.ddpm.rates).sort() : [],
				lastSeen: window.ddpm ? Object.keys(window.ddpm.lastSeen).sort() : [],
				series: p.rate ? p.rate.length : 0};
		})()`))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// waitFor polls the page until ok holds for what it shows.
	waitFor := func(what string, ok func(page) bool) page {
		t.Helper()
		for {
			p := read()
			if ok(p) {
				return p
			}
			select {
			case <-ctx.Done():
				t.Fatalf("waiting for %s: page shows %+v", what, p)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	const groups, size = 3, 4
	var ids [groups][]string
	for g := range groups {
		for k := range size {
			ids[g] = append(ids[g], fmt.Sprintf("churn-%d-%d", g, k))
		}
		at := t0 + int64(1000*(g+1))*stepNS
		for k, id := range ids[g] {
			c.propose(l, fsm.Command{Kind: fsm.KindJoin, Time: at + int64(k)*stepNS, Join: &fsm.Join{ID: id,
				Address: fmt.Sprintf("10.0.1.%d:7000", g*size+k), Version: "test"}})
		}
		waitFor(fmt.Sprintf("group %d's first heartbeats", g), func(p page) bool {
			return !slices.ContainsFunc(ids[g], func(id string) bool { return !slices.Contains(p.LastSeen, id) })
		})
		for k, id := range ids[g] {
			c.propose(l, fsm.Command{Kind: fsm.KindHeartbeat, Time: at + int64(10+k)*stepNS, Heartbeat: &fsm.Heartbeat{ID: id}})
		}
		waitFor(fmt.Sprintf("group %d's step rates", g), func(p page) bool {
			return !slices.ContainsFunc(ids[g], func(id string) bool { return !slices.Contains(p.Rates, id) })
		})
		if g < groups-1 {
			for _, id := range ids[g] {
				c.propose(l, fsm.Command{Kind: fsm.KindLeave, Time: at + 20*stepNS, Leave: &fsm.Leave{ID: id}})
			}
		}
	}
	wantRates := append(slices.Clone(ids[1]), ids[2]...)
	wantSeen := append(slices.Clone(ids[2]), "trainer-a")
	slices.Sort(wantSeen)
	p := waitFor("the chart of the kept series", func(p page) bool { return p.Series == 1+len(p.Rates) })
	if !slices.Equal(p.Rates, wantRates) || !slices.Equal(p.LastSeen, wantSeen) || p.Series != 1+len(wantRates) {
		t.Errorf("page keeps step rates of %v (%d series charted), heartbeats of %v;\nwant %v (%d), %v",
			p.Rates, p.Series-1, p.LastSeen, wantRates, len(wantRates), wantSeen)
	}
}
