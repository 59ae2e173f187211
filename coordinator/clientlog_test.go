package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"ddpm/internal/tlsauth"
	"ddpm/internal/tlsauth/tlsauthtest"
)

// records parses the JSON log records written to l so far.
func records(t *testing.T, l *tlsauthtest.Log) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestClientWarnsWithHint: a client whose calls a real coordinator keeps refusing logs one
// warning per warnEvery (not one per attempt) once the failures have lasted warnAfter, naming
// the likely cause; a client that gets answers logs nothing.
func TestClientWarnsWithHint(t *testing.T) {
	defer func(a, e time.Duration) { warnAfter, warnEvery = a, e }(warnAfter, warnEvery)
	warnAfter, warnEvery = 300*time.Millisecond, time.Hour

	certs := tlsauthtest.Dir(t)
	node, _ := startSecureNode(t, certs)
	addr := node.cfg.GRPCAddr
	call := func(sec *tlsauth.Bundle, d time.Duration) []map[string]any {
		var buf tlsauthtest.Log
		c, err := Dial([]string{addr}, sec, WithLog(slog.New(slog.NewJSONHandler(&buf, nil))),
			WithAttemptTimeout(200*time.Millisecond), WithBackoff(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		_, _ = c.Status(ctx)
		return records(t, &buf)
	}

	if recs := call(tlsauthtest.Load(t, certs, nil), 3*time.Second); len(recs) != 0 {
		t.Fatalf("a client that got answers logged %v", recs)
	}
	for _, c := range []struct {
		name string
		sec  *tlsauth.Bundle
		hint string
	}{
		{"plain text", tlsauthtest.Insecure(t), "it may require mutual TLS while this process runs --insecure"},
		{"another CA", tlsauthtest.Load(t, tlsauthtest.Dir(t), nil), "(--certs of another run?)"},
	} {
		recs := call(c.sec, 1500*time.Millisecond)
		if len(recs) != 1 {
			t.Fatalf("%s: %d log records in 1.5 s, want 1: %v", c.name, len(recs), recs)
		}
		r := recs[0]
		if r["level"] != "WARN" || r["msg"] != "coordinator not answering; retrying" || r["addr"] != addr ||
			!strings.Contains(r["hint"].(string), c.hint) {
			t.Errorf("%s: record %v, want a WARN whose hint contains %q", c.name, r, c.hint)
		}
	}
	if Hint(nil) != "" {
		t.Error("Hint(nil) is not empty")
	}
}

// TestJoinSaysItWaitsForARunConfig: a trainer joining coordinators that were all started without
// the run config (no --config, no run flags) logs once that it waits for one, with a hint, and
// keeps waiting; it used to wait without a word.
func TestJoinSaysItWaitsForARunConfig(t *testing.T) {
	certs := tlsauthtest.Dir(t)
	node, _ := startSecureNode(t, certs) // no Run
	var buf tlsauthtest.Log
	c, err := Dial([]string{node.cfg.GRPCAddr}, tlsauthtest.Load(t, certs, nil), WithLog(slog.New(slog.NewJSONHandler(&buf, nil))),
		WithBackoff(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := c.Join(ctx, JoinRequest{ID: "t0", Address: "127.0.0.1:7100", Version: "v1"}); ctx.Err() == nil {
		t.Fatalf("join returned before its deadline: %v", err)
	}
	recs := records(t, &buf)
	if len(recs) != 1 || recs[0]["level"] != "WARN" || recs[0]["msg"] != MsgWaitingForRun ||
		recs[0]["hint"] != "no coordinator was given the run config (--config or the run flags); start one with it" {
		t.Fatalf("log records %v, want one warning %q with the hint", recs, MsgWaitingForRun)
	}
}
