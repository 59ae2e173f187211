package web_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"ddpm/coordinator/fsm"
	"ddpm/coordinator/web"
)

func TestAPI(t *testing.T) {
	c := newCluster(t, 1)
	l := c.leader()
	gen := c.start(l)
	c.report(l, gen, 1, 30)
	base := c.srvs[l].URL

	var all web.LossDoc
	getJSON(t, base+"/api/loss", &all)
	if len(all.Points) != 30 || all.PointsTotal != 30 || all.ReportsTotal != 30 || all.Generation != gen || all.Capacity != fsm.DefaultLossCapacity {
		t.Fatalf("full history: %d points, totals %d/%d, generation %d, capacity %d", len(all.Points), all.PointsTotal, all.ReportsTotal, all.Generation, all.Capacity)
	}
	for i, p := range all.Points {
		want := point(int64(i + 1))
		want.Step, want.Time, want.Count, want.LossMin, want.LossMax = int64(i+1), t0+int64(i+1)*stepNS, 1, want.Loss, want.Loss
		if p != want {
			t.Fatalf("point %d: got %+v\nwant %+v", i, p, want)
		}
	}
	var part web.LossDoc
	getJSON(t, base+"/api/loss?from=10&to=12", &part)
	if len(part.Points) != 3 || part.Points[0].Step != 10 || part.Points[2].Step != 12 || part.PointsTotal != 30 {
		t.Fatalf("from=10&to=12: %+v", part)
	}
	getJSON(t, base+"/api/loss?from=31", &part)
	if len(part.Points) != 0 || part.Points == nil {
		t.Fatalf("from=31: %+v (want an empty list, not null)", part.Points)
	}

	for _, q := range []struct{ query, want string }{
		{"from=x", `web: bad query: from="x" is not a step (a non-negative integer)`},
		{"to=-1", `web: bad query: to="-1" is not a step (a non-negative integer)`},
		{"from=5&to=4", "web: bad query: from=5 is after to=4"},
	} {
		resp, err := http.Get(base + "/api/loss?" + q.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.TrimSpace(string(b)) != q.want {
			t.Errorf("?%s: %d %q, want 400 %q", q.query, resp.StatusCode, b, q.want)
		}
		vals, _ := url.ParseQuery(q.query)
		if _, _, err := web.LossQuery(vals); !errors.Is(err, web.ErrBadQuery) {
			t.Errorf("LossQuery(%s) = %v, want ErrBadQuery", q.query, err)
		}
	}

	var sum web.Summary
	getJSON(t, base+"/api/summary", &sum)
	if sum.Status != fsm.StatusRunning || sum.Step != 30 || sum.TotalSteps != 10_000 || sum.Generation.Number != gen ||
		len(sum.Members) != 1 || sum.Members[0].ID != "trainer-a" || sum.Members[0].Step != 30 || sum.LossPoints != 30 ||
		sum.Preset != "mnist" || sum.Replica.Replica != "c0" || sum.Replica.Role != "leader" || sum.Replica.Leader != "c0" {
		t.Fatalf("summary: %+v", sum)
	}
	if len(sum.Events) < 3 || sum.Events[len(sum.Events)-1].Kind != "generation" {
		t.Fatalf("events: %+v", sum.Events)
	}

	var st web.StatusDoc
	getJSON(t, base+"/api/status", &st)
	var want []byte
	c.reps[l].View(func(s *fsm.State) { want = s.Encode() })
	if string(st.State.Encode()) != string(want) || st.Role != "leader" || st.AppliedIndex == 0 {
		t.Fatalf("/api/status differs from the replica's state (role %q, applied %d)", st.Role, st.AppliedIndex)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	last := point(30)
	for name, want := range map[string]float64{
		"ddpm_coordinator_loss": last.Loss, "ddpm_coordinator_step": 30, "ddpm_coordinator_generation": float64(gen),
		"ddpm_coordinator_world_size": 1, "ddpm_coordinator_raft_leader": 1, "ddpm_coordinator_loss_history_points": 30,
		"ddpm_coordinator_allreduce_busbw_bytes_per_second": last.BusBW,
	} {
		f, ok := fams[name]
		if !ok || len(f.Metric) != 1 {
			t.Errorf("%s missing", name)
			continue
		}
		if got := f.Metric[0].GetGauge().GetValue(); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// The page and its assets are served from the binary.
	for path, ctype := range map[string]string{"/": "text/html", "/assets/dashboard.js": "text/javascript",
		"/assets/uPlot.iife.min.js": "text/javascript", "/assets/uPlot.min.css": "text/css"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

// TestLeaderChange: every replica serves the same history from the replicated state, and it
// survives the leader's loss; the new leader's reports extend it.
func TestLeaderChange(t *testing.T) {
	c := newCluster(t, 3)
	l := c.leader()
	gen := c.start(l)
	c.report(l, gen, 1, 20)
	idx := c.reps[l].AppliedIndex()
	var docs [3]web.LossDoc
	for i := range c.reps {
		c.waitApplied(i, idx)
		getJSON(t, c.srvs[i].URL+"/api/loss", &docs[i])
	}
	if len(docs[l].Points) != 20 || !reflect.DeepEqual(docs[0], docs[1]) || !reflect.DeepEqual(docs[0], docs[2]) {
		t.Fatalf("replicas disagree: %d/%d/%d points", len(docs[0].Points), len(docs[1].Points), len(docs[2].Points))
	}
	c.stop(l)
	nl := c.leader()
	c.report(nl, gen, 21, 25)
	var after web.LossDoc
	getJSON(t, c.srvs[nl].URL+"/api/loss", &after)
	if len(after.Points) != 25 || !reflect.DeepEqual(after.Points[:20], docs[l].Points) || after.Points[24].Step != 25 {
		t.Fatalf("after the leader change: %d points", len(after.Points))
	}
	var sum web.Summary
	getJSON(t, c.srvs[nl].URL+"/api/summary", &sum)
	if sum.Replica.Role != "leader" || sum.Replica.Replica == fmt.Sprintf("c%d", l) || sum.Replica.Term < 2 {
		t.Fatalf("new leader's summary: %+v", sum.Replica)
	}
}

// TestMount: mounting next to the node's own routes keeps them and adds the rest.
func TestMount(t *testing.T) {
	c := newCluster(t, 1)
	c.leader()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "owner") })
	web.Mount(mux, c.reps[0], web.Options{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/api/status"); code != 200 || body != "owner" {
		t.Errorf("/api/status: %d %q, want the owner's handler", code, body)
	}
	if code, body := get("/api/loss"); code != 200 || !json.Valid([]byte(body)) {
		t.Errorf("/api/loss: %d %q", code, body)
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "<title>ddpm cluster</title>") {
		t.Errorf("/: %d", code)
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}
}
