package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ddpm/internal/tlsauth/tlsauthtest"
)

// leaderLog is a slog.Handler keeping the leadership lines of one replica: message, "replica"
// and "term".
type leaderLog struct {
	mu    *sync.Mutex
	recs  *[]leaderRec
	attrs []slog.Attr
}

type leaderRec struct {
	msg, replica string
	term         uint64
}

func newLeaderLog() *leaderLog { return &leaderLog{mu: &sync.Mutex{}, recs: &[]leaderRec{}} }

func (h *leaderLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *leaderLog) WithGroup(string) slog.Handler            { return h }

func (h *leaderLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &leaderLog{mu: h.mu, recs: h.recs, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}

func (h *leaderLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != MsgBecameLeader && r.Message != MsgLostLeadership {
		return nil
	}
	if r.Level != slog.LevelInfo {
		return fmt.Errorf("%q logged at %v, want INFO", r.Message, r.Level)
	}
	rec := leaderRec{msg: r.Message}
	visit := func(a slog.Attr) bool {
		switch a.Key {
		case "replica":
			rec.replica = a.Value.String()
		case "term":
			rec.term = a.Value.Uint64()
		}
		return true
	}
	for _, a := range h.attrs {
		visit(a)
	}
	r.Attrs(visit)
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, rec)
	return nil
}

func (h *leaderLog) lines() []leaderRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]leaderRec(nil), *h.recs...)
}

// TestLeadershipLogged: in a 3-replica TLS cluster on loopback exactly one replica logs
// MsgBecameLeader with the term raft reports; when it shuts down it logs MsgLostLeadership for
// that term, and exactly one of the two others logs MsgBecameLeader with a higher term.
func TestLeadershipLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-replica cluster")
	}
	addrs := freeAddrs(t, 6)
	var peers []Peer
	for i := range 3 {
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i), RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
	}
	sec := tlsauthtest.Load(t, tlsauthtest.Dir(t), nil)
	dir := t.TempDir()
	var nodes []*Node
	var logs []*leaderLog
	for _, p := range peers {
		lg := newLeaderLog()
		node, err := StartNode(NodeConfig{ID: p.ID, RaftAddr: p.RaftAddr, GRPCAddr: p.GRPCAddr, Peers: peers,
			DataDir: filepath.Join(dir, p.ID), Bootstrap: true, Version: "test", Security: sec, Logger: slog.New(lg)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		nodes, logs = append(nodes, node), append(logs, lg)
	}

	// becameLeader waits until exactly one of the replicas in among has logged MsgBecameLeader
	// (and none of the others has), and returns its index and term.
	becameLeader := func(among ...int) (int, uint64) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			var who []int
			var term uint64
			for _, i := range among {
				for _, r := range logs[i].lines() {
					if r.msg == MsgBecameLeader {
						who, term = append(who, i), r.term
					}
				}
			}
			if len(who) > 1 {
				t.Fatalf("several %q lines among replicas %v: %v", MsgBecameLeader, among, who)
			}
			if len(who) == 1 {
				return who[0], term
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q line among replicas %v within a minute", MsgBecameLeader, among)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	lead, term := becameLeader(0, 1, 2)
	if !nodes[lead].Replica.IsLeader() || nodes[lead].Replica.Raft().CurrentTerm() != term || term == 0 {
		t.Fatalf("replica %d logged %q in term %d; it leads: %v, raft term %d", lead, MsgBecameLeader, term,
			nodes[lead].Replica.IsLeader(), nodes[lead].Replica.Raft().CurrentTerm())
	}
	if got := logs[lead].lines()[0]; got.replica != peers[lead].ID {
		t.Errorf("line names replica %q, want %q", got.replica, peers[lead].ID)
	}
	// Let the followers settle: a stable cluster elects nobody else.
	time.Sleep(time.Second)
	if l2, _ := becameLeader(0, 1, 2); l2 != lead {
		t.Fatalf("leader moved from %d to %d without a failure", lead, l2)
	}

	if err := nodes[lead].Close(); err != nil {
		t.Fatal(err)
	}
	got := logs[lead].lines()
	if want := []leaderRec{{MsgBecameLeader, peers[lead].ID, term}, {MsgLostLeadership, peers[lead].ID, term}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("old leader logged %v, want %v", got, want)
	}
	var rest []int
	for i := range 3 {
		if i != lead {
			rest = append(rest, i)
		}
	}
	next, nextTerm := becameLeader(rest...)
	if nextTerm <= term {
		t.Errorf("replica %d became leader in term %d, want above %d", next, nextTerm, term)
	}
	if !nodes[next].Replica.IsLeader() {
		t.Errorf("replica %d logged %q but is not the leader", next, MsgBecameLeader)
	}
	for _, i := range rest {
		for _, r := range logs[i].lines() {
			if r.msg == MsgLostLeadership {
				t.Errorf("replica %d logged %v though it never led before", i, r)
			}
		}
	}
}
