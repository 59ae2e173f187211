package coordinator

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"ddpm/config"
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
// the likely cause; a client that gets answers logs nothing. (A plain-text client is not
// retried: its first call ends, see TestNewUserS26SecurityMismatchAtOnce.)
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
// the run config (no --config, no run flags) logs once that it waits for one, with a hint, once
// they have answered so for noRunWarnAfter, and keeps waiting; it used to wait without a word.
func TestJoinSaysItWaitsForARunConfig(t *testing.T) {
	defer func(a time.Duration) { noRunWarnAfter = a }(noRunWarnAfter)
	noRunWarnAfter = 300 * time.Millisecond
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

// TestJoinDuringStartUpNoHint: three replicas answer "no run config" until their leader has
// committed the one they were given, and a trainer started with them joins in that window. Its
// join waits and succeeds without a word: the hint that no coordinator was given the run config
// came at the first such answer, blaming a config that was given (seen in about one of five
// ddpm local runs with 3 coordinators). The config is submitted 1 s after the join starts,
// within noRunWarnAfter (5 s).
func TestJoinDuringStartUpNoHint(t *testing.T) {
	nodes, addrs := startNodes(t, 3, "v1", nil)
	var buf tlsauthtest.Log
	c, err := Dial(addrs, nodes[0].cfg.Security, WithLog(slog.New(slog.NewJSONHandler(&buf, nil))), WithBackoff(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	run, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	type joined struct {
		j   Joined
		err error
	}
	done := make(chan joined, 1)
	go func() {
		j, err := c.Join(ctx, JoinRequest{ID: "t0", Address: "127.0.0.1:7100", Version: "v1"})
		done <- joined{j, err}
	}()
	time.Sleep(time.Second)
	sub, err := Dial(addrs, nodes[0].cfg.Security)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	hash, err := sub.SubmitRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.j.ConfigHash != hash {
		t.Fatalf("join: %v, config %.12s; want config %.12s", r.err, r.j.ConfigHash, hash)
	}
	if recs := records(t, &buf); len(recs) != 0 {
		t.Fatalf("a join that waited 1 s for the run config logged %v, want nothing", recs)
	}
}
