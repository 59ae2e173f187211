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
// counts the repeats within window. When the window ends with repeats counted, the last of them
// is logged with the count ("suppressed"), so a burst that stops is still accounted for within a
// window, and a new window opens; a refusal after a window without repeats is logged at once.
// Counts still pending when an entry is dropped (the map is full) are lost. Safe for concurrent
// use.
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
	// The last suppressed refusal's remote and args, and the timer that logs them with the count
	// at the window's end (nil when none is pending).
	remote string
	args   []any
	flush  *time.Timer
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
		c.remote, c.args = remote, args
		if c.flush == nil {
			c.flush = time.AfterFunc(l.window-now.Sub(c.since), func() { l.flush(k, c) })
		}
		l.mu.Unlock()
		return
	}
	suppressed := 0
	if ok {
		suppressed, c.since, c.suppressed = c.suppressed, now, 0
		if c.flush != nil {
			c.flush.Stop()
			c.flush = nil
		}
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

// flush logs the repeats of k counted in c's window, with the last one's remote and args, and
// opens a new window; nothing if c was dropped or its count already logged.
func (l *refusalLimiter) flush(k refusalKey, c *refusalCount) {
	l.mu.Lock()
	c.flush = nil
	if l.seen[k] != c || c.suppressed == 0 {
		l.mu.Unlock()
		return
	}
	n, remote, args := c.suppressed, c.remote, c.args
	c.since, c.suppressed, c.remote, c.args = time.Now(), 0, "", nil
	l.mu.Unlock()
	l.log.Warn(k.msg, append(append([]any{"remote", remote}, args...), "suppressed", n)...)
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
