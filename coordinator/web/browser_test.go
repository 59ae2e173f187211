package web_test

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"ddpm/internal/viz"
)

// chromium is Debian's headless Chromium (scripts/setup.sh installs it for `make test`).
const chromium = "/usr/bin/chromium"

// plotted is what the page's charts hold (window.ddpm.plotted()): per chart, the x array then
// one array per series; gaps are null.
type plotted map[string][][]*float64

// newBrowser starts headless Chromium for t (skipping t where it is not installed) and returns
// its context, which ends 60 s from now or with t.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromium); err != nil {
		t.Skipf("%s not installed (scripts/setup.sh test installs it)", chromium)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1800))
	ctx, cancel := chromedp.NewContext(alloc)
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelAlloc() })
	return ctx
}

// TestDashboardInChromium loads the dashboard from a live replica in real headless Chromium,
// feeds a known loss stream, and checks that the charts hold exactly that stream (and its
// smoothing), that the page picks up new points without a reload, and that the per-trainer step
// rate matches the commands' clock. A screenshot is kept in $TEST_ARTIFACTS (or the test's
// temporary directory).
func TestDashboardInChromium(t *testing.T) {
	ctx := newBrowser(t)
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.report(l, gen, 1, 40)

	if _, err := chromedp.Run(ctx, chromedp.Navigate(c.srvs[l].URL+"/")); err != nil {
		t.Fatal(err)
	}

	// wait polls the page until the loss chart holds n points and returns what it plots.
	wait := func(n int) plotted {
		t.Helper()
		for {
			got, err := chromedp.Run(ctx, chromedp.Evaluate[int](`(window.ddpm && window.ddpm.plotted().loss) ? window.ddpm.plotted().loss[0].length : -1`))
			if err != nil {
				t.Fatalf("waiting for %d points: %v", n, err)
			}
			if got == n {
				break
			}
			select {
			case <-ctx.Done():
				errText, _ := chromedp.Run(context.Background(), chromedp.Evaluate[string](`window.ddpm && window.ddpm.lastError`))
				t.Fatalf("the loss chart holds %d points, want %d (page error %q)", got, n, errText)
			case <-time.After(100 * time.Millisecond):
			}
		}
		p, err := chromedp.Run(ctx, chromedp.Evaluate[plotted](`window.ddpm.plotted()`))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(p plotted, n int) {
		t.Helper()
		loss, quart, tm := p["loss"], p["quartiles"], p["time"]
		if len(loss) != 3 || len(quart) != 5 || len(tm) != 4 {
			t.Fatalf("series: loss %d, quartiles %d, time %d", len(loss), len(quart), len(tm))
		}
		raw := make([]float64, n)
		q := make([][]float64, 4)
		for i := range n {
			s := int64(i + 1)
			want := point(s)
			raw[i] = want.Loss
			if x := loss[0][i]; x == nil || *x != float64(s) {
				t.Fatalf("x[%d] = %v, want step %d", i, x, s)
			}
			// JSON carries float64 exactly (shortest round-trip form both ways).
			if y := loss[1][i]; y == nil || *y != want.Loss {
				t.Fatalf("loss at step %d: plotted %v, reported %v", s, y, want.Loss)
			}
			for k := range 4 {
				q[k] = append(q[k], want.LossQuartiles[k])
			}
			if y := tm[1][i]; y == nil || *y != want.ComputeSec {
				t.Fatalf("compute seconds at step %d: plotted %v, reported %v", s, y, want.ComputeSec)
			}
		}
		// The smoothed curve is internal/viz.Smooth of the stream at the page's default weight.
		const weight, tol = 0.9, 1e-12
		sm := viz.Smooth(raw, weight)
		for i := range n {
			if y := loss[2][i]; y == nil || math.Abs(*y-sm[i]) > tol {
				t.Fatalf("smoothed[%d] = %v, want %v", i, y, sm[i])
			}
		}
		for k := range 4 {
			sq := viz.Smooth(q[k], weight)
			for i := range n {
				if y := quart[k+1][i]; y == nil || math.Abs(*y-sq[i]) > tol {
					t.Fatalf("quartile %d smoothed[%d] = %v, want %v", k, i, y, sq[i])
				}
			}
		}
	}
	check(wait(40), 40)

	updates0, err := chromedp.Run(ctx, chromedp.Evaluate[int](`window.ddpm.updates`))
	if err != nil {
		t.Fatal(err)
	}
	// New points arrive; the page shows them without a reload.
	c.report(l, gen, 41, 55)
	check(wait(55), 55)
	type pageState struct {
		Updates     int
		FullFetches int
		Status      string
		Rates       map[string][][2]float64
	}
	after, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`({updates: window.ddpm.updates, fullFetches: window.ddpm.fullFetches,
		status: document.getElementById("run-status").textContent, rates: window.ddpm.rates})`))
	if err != nil {
		t.Fatal(err)
	}
	if after.Updates <= updates0 || after.FullFetches != 1 || after.Status != "running" {
		t.Fatalf("after new points: updates %d (before %d), full fetches %d, status %q", after.Updates, updates0, after.FullFetches, after.Status)
	}
	// Steps are stamped 0.5 s apart, so the trainer ran at exactly 2 steps/s.
	rates := after.Rates["trainer-a"]
	if len(rates) == 0 {
		t.Fatal("no step rate plotted for trainer-a")
	}
	for _, r := range rates {
		if math.Abs(r[1]-2) > 1e-9 {
			t.Fatalf("step rate %v, want 2 steps/s", r)
		}
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}
