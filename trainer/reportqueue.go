package trainer

import (
	"context"
	"sync"
	"time"
)

// DefaultReportBacklog is how many unsent progress reports a ReportQueue keeps by default: at
// the step rates of this project, minutes of steps, far more than a coordinator leader election
// takes.
const DefaultReportBacklog = 1024

// MaxReportBacklog bounds ReportBacklog: 65536 reports of about 150 bytes, some 10 MB.
const MaxReportBacklog = 1 << 16

// ReportBacklog is the backlog of a cluster trainer's ReportQueue for a run checkpointing every
// checkpointEvery steps: DefaultReportBacklog, or checkpointEvery if larger (the paper presets'
// 5000), at most MaxReportBacklog. A cluster trainer waits at each checkpoint until its queue is
// delivered, so it never holds more than checkpointEvery reports: with this backlog none is
// dropped for want of room, however long the coordinators do not answer, unless checkpointEvery
// exceeds MaxReportBacklog.
func ReportBacklog(checkpointEvery int64) int {
	return int(min(max(checkpointEvery, DefaultReportBacklog), MaxReportBacklog))
}

// ReportQueue keeps a trainer's per-step progress reports until the coordinators have taken
// them, and sends them in step order, one at a time. The coordinators' loss history takes a
// point of an earlier step than its newest as the run going back (it drops the newer points),
// so a report must never overtake an older one: a report that could not be delivered (no
// leader during a re-election) stays at the head and is sent again before any later one.
//
// The queue holds the reports of one generation: a report of a newer generation drops those
// of older ones, and a late one of an older generation is dropped (the coordinators refuse
// them as stale). When full, the oldest report is
// dropped. Push never blocks, so training never waits on the coordinators. The queue lives in
// memory: a process that dies loses it. The cluster trains again every step after its last
// committed checkpoint, so those reports come again; a cluster trainer reports a checkpoint only
// once Flush says the reports before it were delivered (cmd/ddpm's clusterCoord.CheckpointReady),
// so no report of a step at or before a committed checkpoint is lost. A ReportQueue is safe for
// concurrent use; the zero value is not usable (NewReportQueue).
type ReportQueue struct {
	mu      sync.Mutex
	q       []Progress
	max     int
	dropped int64         // reports dropped unsent (queue full, superseded generation)
	full    int64         // of those, the ones dropped because the queue was full
	wake    chan struct{} // 1-buffered: something was pushed
	idle    chan struct{} // closed while nothing is queued or in flight; replaced when busy
}

// NewReportQueue returns a queue keeping at most backlog unsent reports (backlog < 1 panics).
func NewReportQueue(backlog int) *ReportQueue {
	if backlog < 1 {
		panic("trainer: NewReportQueue with a backlog below 1")
	}
	idle := make(chan struct{})
	close(idle)
	return &ReportQueue{max: backlog, wake: make(chan struct{}, 1), idle: idle}
}

// Push queues p behind the reports already queued, in O(1): the queue holds one generation, so
// p of a newer one drops every queued report and p of an older one is itself dropped (the
// coordinators would refuse it as stale); a full queue drops its oldest report.
func (r *ReportQueue) Push(p Progress) {
	r.mu.Lock()
	if len(r.q) > 0 && p.Generation != r.q[0].Generation {
		if p.Generation < r.q[0].Generation {
			r.dropped++
			r.mu.Unlock()
			return
		}
		r.dropped += int64(len(r.q))
		r.q = r.q[:0]
	}
	if len(r.q) >= r.max {
		n := len(r.q) - r.max + 1
		r.q = r.q[n:] // append reallocates once the slack is used: amortized O(1)
		r.dropped += int64(n)
		r.full += int64(n)
	}
	r.q = append(r.q, p)
	r.markBusy()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// markBusy makes idle an open channel; r.mu is held.
func (r *ReportQueue) markBusy() {
	select {
	case <-r.idle:
		r.idle = make(chan struct{})
	default:
	}
}

// Len is the number of reports queued, the one being sent included.
func (r *ReportQueue) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.q)
}

// Dropped is the number of reports dropped unsent so far (full queue, older generation).
func (r *ReportQueue) Dropped() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Overflowed is the number of reports dropped unsent so far because the queue was full: unlike
// those of a superseded generation (whose steps the cluster trains again), their steps keep no
// loss point once a later checkpoint commits.
func (r *ReportQueue) Overflowed() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.full
}

// Run sends the queued reports in order until ctx ends. send delivers one report; when it
// returns again = true (the coordinators did not answer) the report stays at the head and is
// sent again after backoff; otherwise (taken, or refused for good) it is removed. Run must not
// be called twice at once.
func (r *ReportQueue) Run(ctx context.Context, backoff time.Duration, send func(ctx context.Context, p Progress) (again bool)) {
	for {
		r.mu.Lock()
		if len(r.q) == 0 {
			select {
			case <-r.idle:
			default:
				close(r.idle)
			}
			r.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-r.wake:
			}
			continue
		}
		p := r.q[0]
		r.mu.Unlock()
		again := send(ctx, p)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		// A Push may have dropped p meanwhile (a newer generation, a full queue): remove the
		// head only when it is still p.
		if !again && len(r.q) > 0 && r.q[0].Generation == p.Generation && r.q[0].Step == p.Step {
			r.q = r.q[1:]
		}
		r.mu.Unlock()
		if again {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// Flush waits until every queued report has been sent (or dropped) by Run, or ctx ends; it
// reports whether the queue emptied.
func (r *ReportQueue) Flush(ctx context.Context) bool {
	r.mu.Lock()
	idle := r.idle
	r.mu.Unlock()
	select {
	case <-idle:
		return true
	case <-ctx.Done():
		return false
	}
}
