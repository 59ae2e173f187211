package localrun

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Liveness is a liveness probe of a child (Spec.Liveness), as a kubelet's httpGet livenessProbe:
// every Period a GET of URL that must answer a status of 200-399 within Timeout. A process that
// fails every probe for Limit (from the first failed probe of the series to the latest) is
// killed with SIGKILL, which ends a stopped (SIGSTOP) or wedged process too, and the supervisor
// restarts it as it restarts a crash, against Spec.Restart. Until the process has answered one
// probe, or written the line Spec.Ready recognises, it is starting up (binding its port, loading
// its data) and failures do not count, as under a kubelet's startup probe: a process that never
// gets that far is not killed by this probe.
type Liveness struct {
	// URL is the address probed, e.g. "http://127.0.0.1:PORT/healthz".
	URL string
	// Client does the GET (an HTTPS client with the run's CA for an https URL); nil: a plain
	// http.Client. Its own Timeout, if any, is left as it is; Timeout bounds each probe anyway.
	Client *http.Client
	// Period is the time between the starts of two probes; Timeout bounds one probe (the
	// connection, the answer and its body). Both must be positive.
	Period, Timeout time.Duration
	// Limit is how long the probes must fail in a row before the process is killed.
	Limit time.Duration
}

// Unresponsive is what Supervisor.Unresponsive hears of a process its liveness probe kills:
// its name, its pid, the URL probed, how long the probes failed and the last failure ("no answer within 2s",
// "status 503: BODY", or the GET's error).
type Unresponsive struct {
	Name   string
	Pid    int
	URL    string // Liveness.URL
	Failed time.Duration
	Why    string
}

// probeOnce does one GET of lv.URL bounded by lv.Timeout; "" when it answered 200-399, else why
// not, in a few words.
func probeOnce(ctx context.Context, lv *Liveness) string {
	ctx, cancel := context.WithTimeout(ctx, lv.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lv.URL, nil)
	if err != nil {
		return err.Error()
	}
	c := lv.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Sprintf("no answer within %v", lv.Timeout)
		}
		return err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil && ctx.Err() != nil {
		return fmt.Sprintf("no answer within %v", lv.Timeout)
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		why := fmt.Sprintf("status %d", resp.StatusCode)
		first, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if first = strings.TrimSpace(first); first != "" {
			why += ": " + first
		}
		return why
	}
	return ""
}

// watch probes one incarnation of p (its process cmd) as p.spec.Liveness says until reaped is
// closed, and kills cmd when the probes fail for the limit after it answered once or readied was
// closed (Spec.Ready matched its line). It runs on its own goroutine.
func (s *Supervisor) watch(p *proc, cmd *exec.Cmd, readied, reaped <-chan struct{}) {
	lv := p.spec.Liveness
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-reaped:
			cancel()
		case <-ctx.Done():
		}
	}()
	tick := time.NewTicker(lv.Period)
	defer tick.Stop()
	answered := false
	var failingSince time.Time // when the first failed probe of the current series began
	for {
		select {
		case <-reaped:
			return
		case <-tick.C:
		}
		began := time.Now()
		why := probeOnce(ctx, lv)
		if ctx.Err() != nil {
			return
		}
		if why == "" {
			answered, failingSince = true, time.Time{}
			continue
		}
		if !answered {
			select {
			case <-readied:
			default:
				continue // starting up
			}
		}
		if failingSince.IsZero() {
			failingSince = began
		}
		failed := time.Since(failingSince)
		if failed < lv.Limit {
			continue
		}
		s.mu.Lock()
		// Only this incarnation, while it runs and nobody stops it: a process the supervisor
		// is stopping gets its grace, and a restarted one its own probe.
		if p.cmd != cmd || p.exited || p.stopping {
			s.mu.Unlock()
			return
		}
		u := Unresponsive{Name: p.spec.Name, Pid: cmd.Process.Pid, URL: lv.URL, Failed: failed.Round(time.Millisecond), Why: why}
		if s.Unresponsive != nil {
			s.Unresponsive(u)
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		s.mu.Unlock()
		return
	}
}
