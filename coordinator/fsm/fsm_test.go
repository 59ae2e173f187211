package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"ddpm/config"
)

func mnistRun(t testing.TB) config.Run {
	r, err := config.Preset("mnist")
	if err != nil {
		t.Fatal(err)
	}
	r.MinTrainers, r.MaxTrainers, r.Steps, r.CheckpointEvery = 1, 3, 400, 50
	return r
}

func TestDuplicateRequestAppliesOnce(t *testing.T) {
	s := New()
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: mnistRun(t)}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "a:1"}})
	p := Command{Kind: KindProgress, RequestID: "p1", Time: 3, Progress: &Progress{ID: "a", Generation: 1, Step: 7, Point: LossPoint{Loss: 0.5}}}
	r1 := Apply(s, p)
	before := s.Clone()
	p.Time = 99 // a retry is stamped later by the new leader; it must still change nothing
	r2 := Apply(s, p)
	if r1 != r2 {
		t.Fatalf("results differ: %+v %+v", r1, r2)
	}
	before.Applied = s.Applied
	if !bytes.Equal(before.Encode(), s.Encode()) {
		t.Fatal("duplicate changed the state")
	}
	if len(s.Loss.Points) != 1 || s.Members["a"].LastHeartbeat != 3 {
		t.Fatalf("got %+v, heartbeat %d", s.Loss.Points, s.Members["a"].LastHeartbeat)
	}
}

func TestResultErrKeepsSentinel(t *testing.T) {
	s := New()
	r := Apply(s, Command{Kind: KindHeartbeat, Time: 1, Heartbeat: &Heartbeat{ID: "x"}})
	if !errors.Is(r.Err(), ErrUnknownMember) {
		t.Fatalf("got %v", r.Err())
	}
	r = Apply(s, Command{Kind: "bogus"})
	if !errors.Is(r.Err(), ErrBadCommand) {
		t.Fatalf("got %v", r.Err())
	}
	if _, err := DecodeCommand([]byte("{")); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("got %v", err)
	}
}

// TestLossQuartilesMissing: reports without a sample in a timestep quartile (small batches leave
// quarters of [0, T) empty) do not drag that quartile's merged mean toward 0; a quartile no report
// had is marked as absent.
func TestLossQuartilesMissing(t *testing.T) {
	h := NewLossHistory(4)
	// Steps 1-5: quartile 0 is always 1.0 but missing at steps 2 and 4; quartile 3 never seen.
	for i := int64(1); i <= 5; i++ {
		p := LossPoint{Step: i, Loss: 0.5, LossQuartiles: [4]float64{1, 2, 3, 0}, QuartilesMissing: [4]int64{0, 0, 0, 1}}
		if i%2 == 0 {
			p.LossQuartiles[0], p.QuartilesMissing[0] = 0, 1
		}
		h.Add(p)
	}
	// Capacity 4: points 2-3 merged (q0 missing in 2), then 4 and 5 appended after a compaction.
	var merged *LossPoint
	for i := range h.Points {
		if h.Points[i].Count > 1 {
			merged = &h.Points[i]
		}
	}
	if merged == nil {
		t.Fatalf("no merged point: %+v", h.Points)
	}
	if merged.LossQuartiles[0] != 1 || merged.QuartilesMissing[0] != 1 || !merged.HasQuartile(0) {
		t.Errorf("merged quartile 0 = %v (missing %d of %d), want 1 over the reports that had it", merged.LossQuartiles[0], merged.QuartilesMissing[0], merged.Count)
	}
	if merged.LossQuartiles[2] != 3 || merged.HasQuartile(3) {
		t.Errorf("merged point %+v: want quartile 2 = 3 and quartile 3 absent", *merged)
	}
	if last := h.Points[len(h.Points)-1]; last.HasQuartile(3) || !last.HasQuartile(0) {
		t.Errorf("last point %+v: quartile 3 must be absent, 0 present", last)
	}
}

// TestLossHistoryBounded feeds a million reports: the history stays within capacity, keeps the
// first and last points exactly, and keeps the global minimum in LossMin.
func TestLossHistoryBounded(t *testing.T) {
	h := NewLossHistory(256)
	const n = 1_000_000
	loss := func(i int) float64 { return 1/(1+float64(i)/1000) + 1e-4*math.Sin(float64(i)) }
	minLoss, minStep := math.Inf(1), 0
	for i := 1; i <= n; i++ {
		l := loss(i)
		if i == 600_000 {
			l = 1e-4 // a spike down the curve must survive down-sampling
		}
		if l < minLoss {
			minLoss, minStep = l, i
		}
		h.Add(LossPoint{Step: int64(i), Loss: l})
	}
	if len(h.Points) > 256 {
		t.Fatalf("history grew to %d points", len(h.Points))
	}
	first, last := h.Points[0], h.Points[len(h.Points)-1]
	if first.Step != 1 || first.Loss != loss(1) || last.Step != n || last.Loss != loss(n) {
		t.Fatalf("first %+v last %+v", first, last)
	}
	var total int64
	seenMin := false
	for i, p := range h.Points {
		total += p.Count
		if i > 0 && p.Step <= h.Points[i-1].Step {
			t.Fatalf("steps not increasing at %d", i)
		}
		if p.LossMin == minLoss {
			seenMin = true
		}
	}
	if total != n || !seenMin || minStep != 600_000 {
		t.Fatalf("count %d (want %d), minimum kept: %v", total, n, seenMin)
	}
	// Going back (a restart from a checkpoint) drops the points past the new step.
	h.Add(LossPoint{Step: 500_000, Loss: 0.3})
	if last := h.Points[len(h.Points)-1]; last.Step != 500_000 || h.Points[len(h.Points)-2].Step >= 500_000 {
		t.Fatalf("rollback kept later points: %+v", h.Points[len(h.Points)-2:])
	}
}

// TestApplyDeterministic applies random command sequences to a state and, from a snapshot taken
// part-way, to its restored copy: both must end byte-identical, and Apply never panics.
func TestApplyDeterministic(t *testing.T) {
	run := mnistRun(t)
	ids := []string{"a", "b", "c", "d"}
	rapid.Check(t, func(rt *rapid.T) {
		s := New()
		Apply(s, Command{Kind: KindSubmit, Submit: &Submit{Run: run}})
		var clone *State
		cut := rapid.IntRange(0, 60).Draw(rt, "cut")
		now := int64(0)
		for i := range 60 {
			if i == cut {
				clone = s.Clone()
			}
			now += rapid.Int64Range(0, int64(3e9)).Draw(rt, "dt")
			id := rapid.SampledFrom(ids).Draw(rt, "id")
			gen := s.Generation.Number
			step := rapid.Int64Range(0, 8).Draw(rt, "step") * 50
			var c Command
			switch rapid.IntRange(0, 6).Draw(rt, "kind") {
			case 0:
				c = Command{Kind: KindJoin, Join: &Join{ID: id, Address: id + ":1"}}
			case 1:
				c = Command{Kind: KindHeartbeat, Heartbeat: &Heartbeat{ID: id}}
			case 2:
				c = Command{Kind: KindExpire}
			case 3:
				c = Command{Kind: KindProgress, Progress: &Progress{ID: id, Generation: gen, Step: step, Point: LossPoint{Loss: 1 / float64(1+step)}}}
			case 4:
				c = Command{Kind: KindCheckpoint, Checkpoint: &CheckpointReport{ID: id, Generation: gen, Step: step, SHA256: sha64("ab"), Size: 10}}
			case 5:
				c = Command{Kind: KindLeave, Leave: &Leave{ID: id}}
			case 6:
				c = Command{Kind: KindRollback, Rollback: &Rollback{ToStep: step - 50}}
			}
			c.Time = now
			c.RequestID = rapid.SampledFrom([]string{"", "r1", "r2", "r3"}).Draw(rt, "rid")
			Apply(s, c)
			if clone != nil {
				Apply(clone, c)
			}
			checkInvariants(rt, s)
		}
		if clone != nil && !bytes.Equal(clone.Encode(), s.Encode()) {
			rt.Fatalf("restored replica diverged")
		}
	})
}

// checkInvariants asserts the rules every state obeys.
func checkInvariants(t *rapid.T, s *State) {
	g := s.Generation
	if g.World != len(g.Ring) {
		t.Fatalf("world %d != ring %v", g.World, g.Ring)
	}
	if g.World > 0 && (g.World < s.Run.MinTrainers || g.World > s.Run.MaxTrainers) {
		t.Fatalf("world %d outside [%d, %d]", g.World, s.Run.MinTrainers, s.Run.MaxTrainers)
	}
	for _, id := range g.Ring {
		if m, ok := s.Members[id]; !ok || m.State != MemberActive {
			t.Fatalf("rank %s is not an active member", id)
		}
	}
	for id, m := range s.Members {
		if (m.State == MemberActive) != (g.Rank(id) >= 0) {
			t.Fatalf("member %s state %s but rank %d", id, m.State, g.Rank(id))
		}
	}
	if len(s.Checkpoints) > s.Run.KeepCheckpoints {
		t.Fatalf("%d checkpoints kept, retention %d", len(s.Checkpoints), s.Run.KeepCheckpoints)
	}
	if cp := s.LatestCheckpoint(); cp != nil && g.StartStep > cp.Step {
		t.Fatalf("generation starts at %d after the last checkpoint %d", g.StartStep, cp.Step)
	}
	if len(s.Abandoned) > MaxAbandoned {
		t.Fatalf("%d abandoned checkpoints kept, bound %d", len(s.Abandoned), MaxAbandoned)
	}
}

// TestRollbackSnapshots: a state that never rolled back encodes without the abandoned list, so
// snapshots written before rollbacks existed decode to the same bytes; after a rollback the list
// survives a snapshot round trip and still keeps the abandoned checkpoint from being adopted.
func TestRollbackSnapshots(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers = 1
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1"}})
	for i, step := range []int64{50, 100} {
		ck := &CheckpointReport{ID: "a", Generation: 1, Step: step, SHA256: sha64(fmt.Sprintf("%02x", i+1)), Size: 10}
		if r := Apply(s, Command{Kind: KindCheckpoint, Time: 3, Checkpoint: ck}); r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	old := s.Encode()
	if bytes.Contains(old, []byte(`"abandoned"`)) {
		t.Fatalf("a state without rollbacks encodes an abandoned list: %s", old)
	}
	restored, err := Decode(old)
	if err != nil || !bytes.Equal(restored.Encode(), old) {
		t.Fatalf("pre-rollback snapshot does not round-trip: %v", err)
	}
	if _, err := s.PlanRollback(50); err != nil {
		t.Fatalf("plan: %v", err)
	}
	r := Apply(s, Command{Kind: KindRollback, Time: 4, Rollback: &Rollback{ToStep: 50}})
	if r.Err() != nil || r.Generation != 2 {
		t.Fatalf("rollback: %+v %v", r, r.Err())
	}
	c, err := Decode(s.Encode())
	if err != nil || !bytes.Equal(c.Encode(), s.Encode()) {
		t.Fatalf("snapshot after a rollback does not round-trip: %v", err)
	}
	if len(c.Abandoned) != 1 || c.Abandoned[0].Step != 100 || c.Abandoned[0].RolledBackTo != 50 || c.Abandoned[0].AbandonedAt != 4 {
		t.Fatalf("abandoned after restore: %+v", c.Abandoned)
	}
	// b rejoins holding the abandoned 100 as committed: not adopted by the restored replica.
	Apply(c, Command{Kind: KindJoin, Time: 5, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: c.ConfigHash,
		Held: []Held{{Step: 100, SHA256: sha64("02")}}}})
	if latest := c.LatestCheckpoint(); latest.Step != 50 || c.Generation.StartStep != 50 {
		t.Fatalf("after b rejoined with the abandoned checkpoint: latest %d, generation from %d", latest.Step, c.Generation.StartStep)
	}
	if _, err := c.PlanRollback(100); !errors.Is(err, ErrBadRollback) ||
		err.Error() != "cannot roll back: checkpoint 100 was abandoned by the rollback to step 50 (committed checkpoints: 50; or 0 for the start)" {
		t.Fatalf("plan to the abandoned step: %v", err)
	}
}

// TestStaleIncarnationRefused: a Join returns the incarnation it admits (a retried Join the
// same one); after the id is admitted again, the old incarnation's commands are refused with
// ErrStaleIncarnation naming the current incarnation and address, and change nothing.
func TestStaleIncarnationRefused(t *testing.T) {
	s := New()
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: mnistRun(t)}})
	join := Command{Kind: KindJoin, RequestID: "j1", Time: 2, Join: &Join{ID: "a", Address: "h1:1"}}
	first := Apply(s, join)
	if again := Apply(s, join); first.Err() != nil || first.Incarnation != 1 || again != first {
		t.Fatalf("join: %+v, retried: %+v; want incarnation 1 both times", first, again)
	}
	timeout := int64(s.Run.HeartbeatTimeout)
	second := Apply(s, Command{Kind: KindJoin, Time: 3 + timeout, Join: &Join{ID: "a", Address: "h2:1"}})
	if second.Err() != nil || second.Incarnation != 2 {
		t.Fatalf("second admission: %+v, want incarnation 2", second)
	}
	before := s.Clone()
	for _, c := range []Command{
		{Kind: KindHeartbeat, Heartbeat: &Heartbeat{ID: "a", Incarnation: 1}},
		{Kind: KindLeave, Leave: &Leave{ID: "a", Incarnation: 1}},
		{Kind: KindProgress, Progress: &Progress{ID: "a", Incarnation: 1, Generation: s.Generation.Number, Step: 1}},
		{Kind: KindProgress, Progress: &Progress{ID: "a", Incarnation: 1, Generation: s.Generation.Number, Failure: "old process"}},
		{Kind: KindCheckpoint, Checkpoint: &CheckpointReport{ID: "a", Incarnation: 1, Generation: s.Generation.Number, Step: 50,
			SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Size: 8}},
	} {
		c.Time = 4 + timeout
		r := Apply(s, c)
		want := `stale incarnation: trainer "a" incarnation 1 is not the current one: the id was admitted again as incarnation 2 at h2:1`
		if !errors.Is(r.Err(), ErrStaleIncarnation) || r.Err().Error() != want || r.Incarnation != 2 || r.Address != "h2:1" {
			t.Fatalf("%s as incarnation 1: %+v (%v)", c.Kind, r, r.Err())
		}
	}
	before.Applied = s.Applied
	if !bytes.Equal(before.Encode(), s.Encode()) {
		t.Fatal("a stale incarnation's commands changed the state")
	}
	if r := Apply(s, Command{Kind: KindHeartbeat, Time: 5 + timeout, Heartbeat: &Heartbeat{ID: "a", Incarnation: 2}}); r.Err() != nil {
		t.Fatalf("current incarnation's heartbeat: %v", r.Err())
	}
	if r := Apply(s, Command{Kind: KindHeartbeat, Time: 5 + timeout, Heartbeat: &Heartbeat{ID: "a"}}); r.Err() != nil {
		t.Fatalf("unchecked (0) heartbeat: %v", r.Err())
	}
	restored, err := Decode(s.Encode())
	if err != nil || restored.Members["a"].Incarnation != 2 {
		t.Fatalf("restored: %v, incarnation %d", err, restored.Members["a"].Incarnation)
	}
}

// TestSnapshotWithoutIncarnations: a snapshot written before incarnations (members without the
// field, as a replica of the older binary writes it, also after applying Joins a newer leader
// committed) restores to the state that replaying the same commands gives: each member's
// incarnation is JoinSeq+1. Restored as 0, the replicas disagreed, and a trainer's heartbeat
// naming the incarnation its Join returned was refused as stale on the restored replica only.
func TestSnapshotWithoutIncarnations(t *testing.T) {
	s := New()
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: mnistRun(t)}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1"}})
	Apply(s, Command{Kind: KindJoin, Time: 3, Join: &Join{ID: "b", Address: "h2:1"}})
	rejoin := Apply(s, Command{Kind: KindJoin, Time: 4, Join: &Join{ID: "a", Address: "h1:1"}})
	var raw map[string]any
	if err := json.Unmarshal(s.Encode(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, m := range raw["members"].(map[string]any) {
		delete(m.(map[string]any), "incarnation")
	}
	old, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	restored, err := Decode(old)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(restored.Encode(), s.Encode()) {
		t.Fatalf("restored from a snapshot without incarnations:\n%s\nreplayed:\n%s", restored.Encode(), s.Encode())
	}
	hb := Command{Kind: KindHeartbeat, Time: 5, Heartbeat: &Heartbeat{ID: "a", Incarnation: rejoin.Incarnation}}
	if r := Apply(restored, hb); r.Err() != nil {
		t.Fatalf("heartbeat as incarnation %d on the restored replica: %v", rejoin.Incarnation, r.Err())
	}
}

// TestStillAbandoned: after a rollback from 100 to 50, StillAbandoned lists 100 with its sha256;
// once the recomputed 100 commits with another sha256 it is still listed (a volume holding the
// abandoned one must uncommit it), but a 100 committed again with the same sha256 is not (it is
// the committed checkpoint). A state without rollbacks lists none.
func TestStillAbandoned(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers = 1
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", Nonce: "p1"}})
	report := func(gen uint64, step int64, tag string) {
		t.Helper()
		ck := &CheckpointReport{ID: "a", Generation: gen, Step: step, SHA256: sha64(tag), Size: 10}
		if r := Apply(s, Command{Kind: KindCheckpoint, Time: 3, Checkpoint: ck}); r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	report(1, 50, "01")
	report(1, 100, "02")
	if got := s.StillAbandoned(); got != nil {
		t.Fatalf("before a rollback: %v", got)
	}
	if r := Apply(s, Command{Kind: KindRollback, Time: 4, Rollback: &Rollback{ToStep: 50}}); r.Err() != nil {
		t.Fatal(r.Err())
	}
	want := []Held{{Step: 100, SHA256: sha64("02")}}
	if got := s.StillAbandoned(); !slices.Equal(got, want) {
		t.Fatalf("after the rollback: %v, want %v", got, want)
	}
	report(2, 100, "03")
	if got := s.StillAbandoned(); !slices.Equal(got, want) {
		t.Fatalf("after the recomputed 100 (another sha256) committed: %v, want %v", got, want)
	}
	c, err := Decode(s.Encode())
	if err != nil || c.Members["a"].Nonce != "p1" || !slices.Equal(c.StillAbandoned(), want) {
		t.Fatalf("restored: %v, nonce %q, abandoned %v", err, c.Members["a"].Nonce, c.StillAbandoned())
	}
	s.Checkpoints[len(s.Checkpoints)-1].SHA256 = sha64("02")
	if got := s.StillAbandoned(); got != nil {
		t.Fatalf("with 100 committed again with the abandoned sha256: %v, want none", got)
	}
}

// TestMemberHeldSnapshot: a member's held list (Member.Held, from its Join) survives a snapshot,
// a state without one encodes no "held" key, and a rollback to an older held step on the
// restored replica restarts from that step's sha256 as an adopted-like checkpoint (Size 0,
// Generation 0); two members holding different sha256 at that step are refused.
// TestHeldFollowsCommits: a member's held list follows its volume's retention (mark committed,
// then keep the newest keep_checkpoints): a trainer that joined holding step 50 and then took part
// in three commits with keep 2 has pruned 50, so a rollback no longer offers it; before, the list
// of its join stayed and a rollback to 50 was planned from a volume that no longer had it.
func TestHeldFollowsCommits(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MinTrainers, run.MaxTrainers, run.KeepCheckpoints = 2, 2, 2
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 50, SHA256: sha64("05")}}}})
	if s.Generation.World != 2 || s.Generation.StartStep != 50 {
		t.Fatalf("generation %+v, want world 2 from the adopted step 50", s.Generation)
	}
	for _, step := range []int64{100, 150, 200} {
		for _, id := range []string{"a", "b"} {
			ck := &CheckpointReport{ID: id, Generation: s.Generation.Number, Step: step, SHA256: sha64(fmt.Sprintf("%02x", step/50)), Size: 10}
			if r := Apply(s, Command{Kind: KindCheckpoint, Time: 3, Checkpoint: ck}); r.Err() != nil {
				t.Fatal(r.Err())
			}
		}
	}
	want := []Held{{Step: 150, SHA256: sha64("03")}, {Step: 200, SHA256: sha64("04")}}
	for _, id := range []string{"a", "b"} {
		if got := s.Members[id].Held; !slices.Equal(got, want) {
			t.Fatalf("%s holds %+v, want %+v", id, got, want)
		}
	}
	if _, err := s.PlanRollback(50); !errors.Is(err, ErrBadRollback) {
		t.Fatalf("rollback to the pruned step 50 planned: %v", err)
	}
	c, err := Decode(s.Encode())
	if err != nil || !slices.Equal(c.Members["b"].Held, want) {
		t.Fatalf("held after restore: %+v %v", c.Members["b"].Held, err)
	}
}

func TestMemberHeldSnapshot(t *testing.T) {
	s := New()
	run := mnistRun(t)
	run.MaxTrainers, run.KeepCheckpoints = 1, 1
	Apply(s, Command{Kind: KindSubmit, Time: 1, Submit: &Submit{Run: run}})
	Apply(s, Command{Kind: KindJoin, Time: 2, Join: &Join{ID: "a", Address: "h1:1", ConfigHash: s.ConfigHash}})
	if b := s.Encode(); bytes.Contains(b, []byte(`"held"`)) {
		t.Fatalf("a state whose members hold nothing encodes a held list: %s", b)
	}
	for i, step := range []int64{50, 100} {
		ck := &CheckpointReport{ID: "a", Generation: 1, Step: step, SHA256: sha64(fmt.Sprintf("%02x", i+1)), Size: 10}
		if r := Apply(s, Command{Kind: KindCheckpoint, Time: 3, Checkpoint: ck}); r.Err() != nil {
			t.Fatal(r.Err())
		}
	}
	// a's volume committed 50 and 100 and pruned to keep_checkpoints 1.
	if want := []Held{{Step: 100, SHA256: sha64("02")}}; !slices.Equal(s.Members["a"].Held, want) {
		t.Fatalf("a holds %+v after two commits with keep 1, want %+v", s.Members["a"].Held, want)
	}
	// b's volume holds 50 (fallen off the list: keep 1) plus entries that are no checkpoint
	// of the run, dropped; c joins without the config hash, so its list is not believed.
	Apply(s, Command{Kind: KindJoin, Time: 4, Join: &Join{ID: "b", Address: "h2:1", ConfigHash: s.ConfigHash,
		Held: []Held{{Step: 50, SHA256: sha64("01")}, {Step: 7, SHA256: sha64("07")}, {Step: 50, SHA256: sha64("01")}, {Step: 60, SHA256: "short"}}}})
	Apply(s, Command{Kind: KindJoin, Time: 4, Join: &Join{ID: "c", Address: "h3:1",
		Held: []Held{{Step: 50, SHA256: sha64("0f")}}}})
	c, err := Decode(s.Encode())
	if err != nil || !bytes.Equal(c.Encode(), s.Encode()) {
		t.Fatalf("snapshot with held lists does not round-trip: %v", err)
	}
	if want := []Held{{Step: 50, SHA256: sha64("01")}}; !slices.Equal(c.Members["b"].Held, want) || c.Members["c"].Held != nil {
		t.Fatalf("held after restore: b %+v c %+v", c.Members["b"].Held, c.Members["c"].Held)
	}
	Apply(c, Command{Kind: KindLeave, Time: 5, Leave: &Leave{ID: "a"}})
	if got := c.RollbackTarget(); got != 50 {
		t.Fatalf("rollback target %d, want 50", got)
	}
	if p := c.RollbackPoint(50); p == nil || p.SHA256 != sha64("01") || !slices.Equal(p.Holders, []string{"b"}) {
		t.Fatalf("rollback point: %+v", p)
	}
	// A second believed holder of 50 with another sha256: refused, naming both.
	d := c.Clone()
	Apply(d, Command{Kind: KindJoin, Time: 6, Join: &Join{ID: "d", Address: "h4:1", ConfigHash: d.ConfigHash,
		Held: []Held{{Step: 50, SHA256: sha64("0e")}}}})
	if _, err := d.PlanRollback(50); !errors.Is(err, ErrBadRollback) || err.Error() !=
		"cannot roll back: members hold different checkpoints at step 50: 010101010101 (b), 0e0e0e0e0e0e (d); roll back to another step (committed checkpoints: 100; or 0 for the start)" {
		t.Fatalf("plan with two sha256 at 50: %v", err)
	}
	if r := Apply(c, Command{Kind: KindRollback, Time: 7, Rollback: &Rollback{ToStep: 50}}); r.Err() != nil {
		t.Fatalf("rollback: %v", r.Err())
	}
	want := Checkpoint{Step: 50, SHA256: sha64("01"), Size: 0, Generation: 0, Holders: []string{"b"}, Time: 7}
	if g := c.Generation; g.Checkpoint == nil || g.StartStep != 50 || !reflect.DeepEqual(*g.Checkpoint, want) ||
		len(c.Checkpoints) != 1 || !reflect.DeepEqual(c.Checkpoints[0], want) {
		t.Fatalf("after the rollback: generation %+v checkpoints %+v", g, c.Checkpoints)
	}
	if len(c.Abandoned) != 1 || c.Abandoned[0].Step != 100 {
		t.Fatalf("abandoned %+v", c.Abandoned)
	}
}
