package trainer

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestReportQueueOrderAndBounds: reports go out in step order, a report send asks to try again
// is sent again before any later one, a newer generation drops the older one's reports, and a
// full queue drops its oldest; a late report of a superseded generation is dropped.
func TestReportQueueOrderAndBounds(t *testing.T) {
	q := NewReportQueue(4)
	for s := int64(1); s <= 6; s++ {
		q.Push(Progress{Step: s, Generation: 1})
	}
	if q.Len() != 4 || q.Dropped() != 2 || q.Overflowed() != 2 {
		t.Fatalf("full queue: %d queued, %d dropped, %d overflowed; want 4, 2, 2", q.Len(), q.Dropped(), q.Overflowed())
	}
	q.Push(Progress{Step: 4, Generation: 2}) // a new generation restarted from step 3
	q.Push(Progress{Step: 5, Generation: 2})
	q.Push(Progress{Step: 7, Generation: 1}) // late, of the superseded generation: dropped
	if q.Len() != 2 || q.Dropped() != 7 || q.Overflowed() != 2 {
		t.Fatalf("after a new generation: %d queued, %d dropped, %d overflowed; want 2, 7, 2", q.Len(), q.Dropped(), q.Overflowed())
	}
	var mu sync.Mutex
	var sent []string
	fails := 2
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx, time.Millisecond, func(_ context.Context, p Progress) bool {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, fmt.Sprintf("%d/%d", p.Generation, p.Step))
		if p.Step == 5 && fails > 0 {
			fails--
			return true
		}
		return false
	})
	q.Push(Progress{Step: 6, Generation: 2})
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	if !q.Flush(fctx) {
		t.Fatal("queue did not empty")
	}
	mu.Lock()
	got := fmt.Sprint(sent)
	mu.Unlock()
	if want := "[2/4 2/5 2/5 2/5 2/6]"; got != want {
		t.Fatalf("sent %s, want %s", got, want)
	}
}

// TestReportBacklogHoldsACheckpointInterval: a cluster trainer's queue has room for every report
// between two checkpoints (it waits at each until the queue is delivered), from 1024 up to 65536;
// a queue of the paper presets' interval (5000) drops none of its 5000 reports.
func TestReportBacklogHoldsACheckpointInterval(t *testing.T) {
	for _, tc := range []struct {
		every int64
		want  int
	}{{1, 1024}, {50, 1024}, {1024, 1024}, {1025, 1025}, {5000, 5000}, {1 << 16, 1 << 16}, {1_000_000, 1 << 16}} {
		if got := ReportBacklog(tc.every); got != tc.want {
			t.Errorf("ReportBacklog(%d) = %d, want %d", tc.every, got, tc.want)
		}
	}
	q := NewReportQueue(ReportBacklog(5000))
	for s := int64(1); s <= 5000; s++ {
		q.Push(Progress{Step: s, Generation: 1})
	}
	if q.Len() != 5000 || q.Dropped() != 0 {
		t.Fatalf("5000 reports of a checkpoint interval of 5000: %d queued, %d dropped; want 5000, 0", q.Len(), q.Dropped())
	}
}
