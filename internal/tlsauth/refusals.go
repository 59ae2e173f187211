package tlsauth

import (
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// Refusal logging is rate-limited: a peer of another cluster (or a plain-text one) retries every
// few hundred milliseconds, and one WARN line per attempt would drown everything else.
const (
	// refusalWindow is how long repeats of a logged refusal are counted instead of logged.
	refusalWindow = 30 * time.Second
	// refusalKeys bounds the number of (message, host, reason) entries remembered.
	refusalKeys = 1024
)

// refusalLimiter logs the first refusal of each (message, remote host, reason) at once and
// counts the repeats within window; the first repeat after the window is logged with the count
// ("suppressed") and opens a new window. Counts still pending when an entry is dropped (the map
// is full) are lost. Safe for concurrent use.
type refusalLimiter struct {
	log *slog.Logger

	mu     sync.Mutex
	window time.Duration // tests shorten it (under mu)
	max    int
	seen   map[refusalKey]*refusalCount
	total  int // refusals passed to warn, logged or not
}

type refusalKey struct{ msg, host, reason string }

type refusalCount struct {
	since      time.Time // when the line that opened the window was logged
	suppressed int
}

func newRefusalLimiter(log *slog.Logger) *refusalLimiter {
	return &refusalLimiter{log: log, window: refusalWindow, max: refusalKeys, seen: map[refusalKey]*refusalCount{}}
}

// warn logs msg at WARN with "remote" (the full address) followed by args, unless the same msg,
// host of remote and reason were logged less than a window ago. reason must leave out what
// changes from one connection of a peer to the next (see refusalReason).
func (l *refusalLimiter) warn(msg, remote, reason string, args ...any) {
	k := refusalKey{msg, hostOf(remote), reason}
	now := time.Now()
	l.mu.Lock()
	l.total++
	c, ok := l.seen[k]
	if ok && now.Sub(c.since) < l.window {
		c.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := 0
	if ok {
		suppressed, c.since, c.suppressed = c.suppressed, now, 0
	} else {
		l.makeRoom(now)
		l.seen[k] = &refusalCount{since: now}
	}
	l.mu.Unlock()
	args = append([]any{"remote", remote}, args...)
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	l.log.Warn(msg, args...)
}

// hostOf is remote without its port (remote itself when it has none).
func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// makeRoom drops the entries whose window has passed when the map is full, and the oldest entry
// if that was not enough. The caller holds mu.
func (l *refusalLimiter) makeRoom(now time.Time) {
	if len(l.seen) < l.max {
		return
	}
	var oldest refusalKey
	var oldestSince time.Time
	for k, c := range l.seen {
		if now.Sub(c.since) >= l.window {
			delete(l.seen, k)
		} else if oldestSince.IsZero() || c.since.Before(oldestSince) {
			oldest, oldestSince = k, c.since
		}
	}
	if len(l.seen) >= l.max {
		delete(l.seen, oldest)
	}
}

// refusalReason is err's text without what changes from one connection of a peer to the next:
// a socket error's addresses ("read tcp 127.0.0.1:7000->127.0.0.1:53122: ...") and the remote
// port.
func refusalReason(err error, remote string) string {
	s := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		s = strings.ReplaceAll(s, op.Error(), op.Op+": "+op.Err.Error())
	}
	if host := hostOf(remote); host != remote {
		s = strings.ReplaceAll(s, remote, host)
	}
	return s
}
