package localrun

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// healthServer is a real HTTP server standing in for a child's /healthz: its first ok requests
// answer 200 "ok", every later one fails as fail says ("503": status 503 "wedged: no step for
// 10m"; "hang": no answer until the test ends).
type healthServer struct {
	*httptest.Server
	seen atomic.Int64 // requests so far
}

func newHealthServer(t *testing.T, ok int64, fail string) *healthServer {
	t.Helper()
	h := &healthServer{}
	release := make(chan struct{})
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.seen.Add(1) <= ok {
			fmt.Fprintln(w, "ok: training")
			return
		}
		switch fail {
		case "503":
			http.Error(w, "wedged: no step for 10m\nsecond line", http.StatusServiceUnavailable)
		case "hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(func() { close(release); h.Close() })
	return h
}

// unresponsive collects what Supervisor.Unresponsive hears.
type unresponsive struct {
	mu  sync.Mutex
	got []Unresponsive
}

func (u *unresponsive) add(x Unresponsive) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = append(u.got, x)
}

func (u *unresponsive) list() []Unresponsive {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Unresponsive(nil), u.got...)
}

// TestLivenessKillsUnresponsiveS26: a child whose liveness probe answered, then fails for the
// limit (status 503 with a body; no answer within the probe's timeout) is reported once with its
// name, pid, and the last failure, SIGKILLed, and restarted against Spec.Restart like a crash;
// its restarted self, which has not answered yet, is not killed however long the probes fail.
// The probe's timeouts leave a stalled test process seconds: only the hang waits them out.
func TestLivenessKillsUnresponsiveS26(t *testing.T) {
	for _, tc := range []struct {
		fail, why      string
		timeout, limit time.Duration
		spans          int64 // failed probes that span more than limit
	}{
		{"503", "status 503: wedged: no step for 10m", 5 * time.Second, 600 * time.Millisecond, 12},
		{"hang", "no answer within 1s", time.Second, 3 * time.Second, 5},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			s, l, _ := newSup(t)
			var u unresponsive
			s.Unresponsive = u.add
			srv := newHealthServer(t, 5, tc.fail)
			limit := tc.limit
			lv := &Liveness{URL: srv.URL + "/healthz", Period: 100 * time.Millisecond, Timeout: tc.timeout, Limit: limit}
			if err := s.Start(Spec{Name: "c", Env: []string{"LOCALRUN_CHILD=ignore-term"}, Restart: 1, Liveness: lv}); err != nil {
				t.Fatal(err)
			}
			waitLine(t, l, "c", "ready")
			pid := s.Pid("c")
			var e Exit
			select {
			case e = <-s.Exits():
			case <-time.After(time.Minute):
				t.Fatalf("the child was not killed within a minute; probes %d, reports %+v", srv.seen.Load(), u.list())
			}
			if e.Name != "c" || !e.Restarting || e.Err == nil || e.Err.Error() != "signal: killed" {
				t.Errorf("exit %+v, want c killed (signal: killed) and restarting", e)
			}
			got := u.list()
			if len(got) != 1 || got[0].Name != "c" || got[0].Pid != pid || got[0].Why != tc.why || got[0].Failed < limit {
				t.Fatalf("reports %+v, want one for c, pid %d, why %q, failed at least %v", got, pid, tc.why, limit)
			}
			// The restarted child never answers: after more probes than the limit spans, it
			// still runs and nothing more was reported.
			deadline := time.Now().Add(time.Minute)
			for s.Pid("c") == 0 || s.Pid("c") == pid {
				if time.Now().After(deadline) {
					t.Fatal("the child was not restarted")
				}
				time.Sleep(10 * time.Millisecond)
			}
			seen := srv.seen.Load()
			for srv.seen.Load() < seen+tc.spans {
				if time.Now().After(deadline) {
					t.Fatalf("only %d probes of the restarted child", srv.seen.Load()-seen)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := len(u.list()); n != 1 || s.Pid("c") == 0 {
				t.Errorf("restarted child: %d reports, pid %d; want it running, unreported", n, s.Pid("c"))
			}
		})
	}
}

// TestLivenessSparesHealthyS26: a child whose probe keeps answering 200 is neither reported nor
// killed over many probes, and Stop's own SIGKILL after its grace is not reported as
// unresponsiveness.
func TestLivenessSparesHealthyS26(t *testing.T) {
	s, l, _ := newSup(t)
	var u unresponsive
	s.Unresponsive = u.add
	srv := newHealthServer(t, 1<<40, "")
	lv := &Liveness{URL: srv.URL + "/healthz", Period: 50 * time.Millisecond, Timeout: 5 * time.Second, Limit: 10 * time.Second}
	if err := s.Start(Spec{Name: "c", Env: []string{"LOCALRUN_CHILD=ignore-term"}, Restart: 1, Liveness: lv}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, l, "c", "ready")
	deadline := time.Now().Add(time.Minute)
	for srv.seen.Load() < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d probes", srv.seen.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(u.list()) != 0 || len(drain(s)) != 0 {
		t.Fatalf("a healthy child was reported %+v", u.list())
	}
	if err := s.Stop("c", 300*time.Millisecond); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("Stop = %v, want signal: killed after its grace", err)
	}
	if got := u.list(); len(got) != 0 {
		t.Fatalf("reports %+v for a stopped child", got)
	}
	if err := s.Wait(context.Background(), "c"); err == nil {
		t.Fatal("Wait = nil")
	}
}

// TestLivenessAfterReadyLineS26: a child that never answered its probe but wrote the line
// Spec.Ready recognises has started up (its port is bound): probes that fail for the limit from
// then on kill it, as they do one that answered.
func TestLivenessAfterReadyLineS26(t *testing.T) {
	s, l, _ := newSup(t)
	var u unresponsive
	s.Unresponsive = u.add
	srv := newHealthServer(t, 0, "503")
	lv := &Liveness{URL: srv.URL + "/healthz", Period: 100 * time.Millisecond, Timeout: 5 * time.Second, Limit: 300 * time.Millisecond}
	ready := func(line []byte) bool { return string(line) == "ready\n" }
	if err := s.Start(Spec{Name: "c", Env: []string{"LOCALRUN_CHILD=ignore-term"}, Ready: ready, Liveness: lv}); err != nil {
		t.Fatal(err)
	}
	waitLine(t, l, "c", "ready")
	pid := s.Pid("c")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.Wait(ctx, "c")
	if err == nil || err.Error() != "signal: killed" {
		t.Fatalf("Wait = %v, want signal: killed (probes %d)", err, srv.seen.Load())
	}
	if got := u.list(); len(got) != 1 || got[0].Pid != pid || got[0].Why != "status 503: wedged: no step for 10m" {
		t.Fatalf("reports %+v, want one for pid %d", got, pid)
	}
}
