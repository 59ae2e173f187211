package fsm

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"ddpm/config"
)

// Kind names a command.
type Kind string

// Command kinds.
const (
	KindSubmit     Kind = "submit"     // Submit: set the run config
	KindJoin       Kind = "join"       // Join: a trainer joins (or rejoins after a restart)
	KindHeartbeat  Kind = "heartbeat"  // Heartbeat: a trainer is alive
	KindLeave      Kind = "leave"      // Leave: a trainer leaves cleanly
	KindExpire     Kind = "expire"     // (no body): remove members silent past the timeout
	KindProgress   Kind = "progress"   // Progress: a rank reports a step
	KindCheckpoint Kind = "checkpoint" // CheckpointReport: a rank wrote a checkpoint
	KindRollback   Kind = "rollback"   // Rollback: an operator abandons the newest checkpoints
	KindRelease    Kind = "release"    // Release: a new leader's binary version and RulesVersion
)

// Command is one raft log entry. Time (Unix ns) is stamped by the proposing replica's clock and
// is the only time Apply knows. RequestID, when not empty, makes the command idempotent: a second
// command with the same id returns the first one's Result and changes nothing.
type Command struct {
	Kind      Kind   `json:"kind"`
	RequestID string `json:"request_id,omitempty"`
	Time      int64  `json:"time"`

	Submit     *Submit           `json:"submit,omitempty"`
	Join       *Join             `json:"join,omitempty"`
	Heartbeat  *Heartbeat        `json:"heartbeat,omitempty"`
	Leave      *Leave            `json:"leave,omitempty"`
	Progress   *Progress         `json:"progress,omitempty"`
	Checkpoint *CheckpointReport `json:"checkpoint,omitempty"`
	Rollback   *Rollback         `json:"rollback,omitempty"`
	Release    *Release          `json:"release,omitempty"`
}

// Submit sets the run config. Submitting the config already in force is a no-op.
type Submit struct {
	Run config.Run `json:"run"`
}

// Held names a checkpoint a joining trainer has on its volume.
type Held struct {
	Step   int64  `json:"step"`
	SHA256 string `json:"sha256"`
}

// Join adds or refreshes a member. ConfigHash, when not empty, must equal the run's. Nonce is
// the joining process's random token (the same for every Join of one process), kept as
// Member.Nonce and named by stale_incarnation refusals; empty from clients older than nonces.
type Join struct {
	ID         string `json:"id"`
	Address    string `json:"address"`
	Version    string `json:"version"`
	ConfigHash string `json:"config_hash,omitempty"`
	Held       []Held `json:"held,omitempty"`
	Nonce      string `json:"nonce,omitempty"`
}

// Heartbeat refreshes a member's last heartbeat. Incarnation, when not 0, must be the member's
// current one (Member.Incarnation), else ErrStaleIncarnation; so for Leave, Progress and
// CheckpointReport.
type Heartbeat struct {
	ID          string `json:"id"`
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// Leave removes a member. Leaving as an id that is not a member is not an error; leaving as a
// stale incarnation is (ErrStaleIncarnation): the id belongs to a newer process, which stays.
type Leave struct {
	ID          string `json:"id"`
	Incarnation uint64 `json:"incarnation,omitempty"`
}

// Progress is a rank's report after finishing Step (steps completed). Point's Step and Time are
// overwritten from the report and the command; Point.Skipped non-zero reports a step skipped for
// a non-finite gradient, recorded without its loss (LossHistory.Add). Failure, when not empty,
// fails the run with it.
type Progress struct {
	ID          string    `json:"id"`
	Incarnation uint64    `json:"incarnation,omitempty"`
	Generation  uint64    `json:"generation"`
	Step        int64     `json:"step"`
	Point       LossPoint `json:"point"`
	Failure     string    `json:"failure,omitempty"`
}

// CheckpointReport says that member ID wrote and fsynced the checkpoint of Step with this hash.
type CheckpointReport struct {
	ID          string `json:"id"`
	Incarnation uint64 `json:"incarnation,omitempty"`
	Generation  uint64 `json:"generation"`
	Step        int64  `json:"step"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
}

// Rollback abandons the committed checkpoints after step ToStep and restarts the run from
// ToStep: the way out when the only holders of the newest committed checkpoint are gone for good
// (their volumes lost) and the run would wait for them forever. ToStep must be a committed
// checkpoint that a current member holds, or 0 (the initial parameters, which need no holder);
// see State.PlanRollback for the refusals. The abandoned checkpoints move to State.Abandoned,
// the loss points after ToStep are dropped (the recomputed steps report theirs), and a new
// generation starts from ToStep at once, whatever the current one was doing. The recomputed
// checkpoints commit afresh at the abandoned steps (a checkpoint records the generation that
// wrote it, so they hash differently). On a failed run it is also the way to revive it: ToStep
// may then be the newest committed checkpoint (nothing abandoned), or one no current member holds
// (the generation waits for a holder to rejoin); the run is running again. A succeeded run is
// not rolled back.
type Rollback struct {
	ToStep int64 `json:"to_step"`
}

// Release is the record a replica appends when it wins a raft election, before any other
// command of its term: the release it runs (Version, the binary's internal/version string) and
// the RulesVersion it applies the log under. Term is the raft term of the log entry that carries
// the record; the replica's raft adapter sets it from the entry before Apply (a proposer leaves it
// 0), so every replica stores the same value. Apply keeps the record as State.Release and changes
// nothing else; a replica that finds the leader it follows now applying other rules than its own
// stops before applying past it (coordinator.ReleaseMismatchError). Releases before this record
// existed answer it with ErrBadCommand ("unknown command kind") and change nothing else, so they
// cannot be guarded.
type Release struct {
	Version string `json:"version"` // the leader's binary version (internal/version)
	Rules   int    `json:"rules"`   // the leader's RulesVersion, >= 1
	Term    uint64 `json:"term"`    // the raft term of the entry that carries the record
}

// Encode returns c as a log entry.
func (c Command) Encode() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic("fsm: cannot encode command: " + err.Error())
	}
	return b
}

// DecodeCommand parses a log entry written by Command.Encode.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return Command{}, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	return c, nil
}

// Apply applies c to s in place and returns the outcome. It is deterministic: equal states and
// equal commands give equal states and results, on every replica. It never panics on a
// malformed command (it returns ErrBadCommand); it panics only if s is nil.
func Apply(s *State, c Command) Result {
	if s == nil {
		panic("fsm: Apply on a nil state")
	}
	s.Applied++
	if c.RequestID != "" {
		if r, ok := s.Dedup[c.RequestID]; ok {
			return r
		}
	}
	err := apply(s, c)
	r := Result{Generation: s.Generation.Number}
	if err != nil {
		r.Code, r.Message, r.Incarnation, r.Address, r.Nonce = err.code, err.msg, err.incarnation, err.address, err.nonce
	} else if c.Kind == KindJoin {
		r.Incarnation = s.Members[c.Join.ID].Incarnation
	}
	if c.RequestID != "" {
		s.Dedup[c.RequestID] = r
		s.DedupOrder = append(s.DedupOrder, c.RequestID)
		if len(s.DedupOrder) > MaxDedup {
			// Re-slicing (not shifting the MaxDedup ids left) keeps this O(1): append copies
			// the ids into a new array once the old one's room is used up.
			delete(s.Dedup, s.DedupOrder[0])
			s.DedupOrder = s.DedupOrder[1:]
		}
	}
	return r
}

// failure is an Apply error: a code of the codes table and a message; a stale_incarnation
// refusal also names the current incarnation, its address and its process nonce.
type failure struct {
	code, msg      string
	incarnation    uint64
	address, nonce string
}

func fail(code, format string, args ...any) *failure {
	return &failure{code: code, msg: fmt.Sprintf(format, args...)}
}

// checkIncarnation is Member.CheckIncarnation as an Apply failure.
func checkIncarnation(m *Member, inc uint64) *failure {
	r := m.CheckIncarnation(inc)
	if r.Code == "" {
		return nil
	}
	return &failure{code: r.Code, msg: r.Message, incarnation: r.Incarnation, address: r.Address, nonce: r.Nonce}
}

func apply(s *State, c Command) *failure {
	switch c.Kind {
	case KindSubmit:
		if c.Submit == nil {
			return fail("bad_command", "submit without a body")
		}
		return submit(s, c.Time, c.Submit)
	case KindJoin:
		if c.Join == nil || c.Join.ID == "" {
			return fail("bad_command", "join without a member id")
		}
		return join(s, c.Time, c.Join)
	case KindHeartbeat:
		if c.Heartbeat == nil {
			return fail("bad_command", "heartbeat without a body")
		}
		m, ok := s.Members[c.Heartbeat.ID]
		if !ok {
			return fail("unknown_member", "%q is not a member (removed after missed heartbeats?); join again", c.Heartbeat.ID)
		}
		if f := checkIncarnation(m, c.Heartbeat.Incarnation); f != nil {
			return f
		}
		m.LastHeartbeat = max(m.LastHeartbeat, c.Time)
		return nil
	case KindLeave:
		if c.Leave == nil {
			return fail("bad_command", "leave without a body")
		}
		m, ok := s.Members[c.Leave.ID]
		if !ok {
			return nil // already gone: leaving is idempotent
		}
		if f := checkIncarnation(m, c.Leave.Incarnation); f != nil {
			return f
		}
		remove(s, c.Time, []string{c.Leave.ID}, "left")
		return nil
	case KindExpire:
		if ids := s.Expired(c.Time); len(ids) > 0 {
			remove(s, c.Time, ids, "missed heartbeats")
		}
		return nil
	case KindProgress:
		if c.Progress == nil {
			return fail("bad_command", "progress without a body")
		}
		return progress(s, c.Time, c.Progress)
	case KindCheckpoint:
		if c.Checkpoint == nil {
			return fail("bad_command", "checkpoint report without a body")
		}
		return checkpoint(s, c.Time, c.Checkpoint)
	case KindRollback:
		if c.Rollback == nil {
			return fail("bad_command", "rollback without a body")
		}
		return rollback(s, c.Time, c.Rollback)
	case KindRelease:
		if c.Release == nil || c.Release.Rules <= 0 {
			return fail("bad_command", "release record without a rules version")
		}
		rel := *c.Release
		s.Release = &rel
		return nil
	}
	return fail("bad_command", "unknown command kind %q", c.Kind)
}

func submit(s *State, now int64, b *Submit) *failure {
	run := b.Run
	if err := run.Validate(); err != nil {
		// One line per problem, without repeating the sentinel's text on each.
		msg := strings.ReplaceAll(err.Error(), config.ErrInvalid.Error()+": ", "")
		return fail("invalid_config", "%s", strings.ReplaceAll(msg, "\n", "; "))
	}
	hash := run.Hash()
	if s.Run != nil {
		if s.ConfigHash == hash {
			return nil
		}
		return fail("config_mismatch", "a different run (config %.12s) is already configured; submitted %.12s", s.ConfigHash, hash)
	}
	s.Run, s.ConfigHash, s.DatasetFingerprint = &run, hash, run.DatasetFingerprint
	s.Status, s.TotalSteps = StatusPending, run.Steps
	if s.Loss.Capacity == 0 {
		s.Loss = NewLossHistory(DefaultLossCapacity)
	}
	s.event(now, "run", "run configured: preset %s, model %s, %d steps, global batch %d, config %.12s",
		orDash(run.Preset), run.Model, run.Steps, run.GlobalBatch, hash)
	reconcile(s, now, "")
	return nil
}

func join(s *State, now int64, j *Join) *failure {
	if s.Run == nil {
		return fail("no_run", "trainer %q cannot join before a run config is submitted", j.ID)
	}
	if j.ConfigHash != "" && j.ConfigHash != s.ConfigHash {
		return fail("config_mismatch", "trainer %q runs config %.12s but the cluster runs %.12s", j.ID, j.ConfigHash, s.ConfigHash)
	}
	if s.Status.Terminal() {
		return fail("run_finished", "the run has %s%s", s.Status, reasonSuffix(s.Reason))
	}
	if old, ok := s.Members[j.ID]; ok {
		// The same id from another address while the member still heartbeats is a second
		// process given the same --id, not a restart: taking the id over would put both in
		// the ring as one rank and stall the run for good.
		if old.Address != j.Address && now-old.LastHeartbeat <= int64(s.Run.HeartbeatTimeout) {
			return fail("id_in_use", "%q belongs to a live member at %s (last heartbeat %s ago); give each trainer its own --id",
				j.ID, old.Address, time.Duration(max(0, now-old.LastHeartbeat)).Round(time.Millisecond))
		}
		// The same id joining again is a restarted process: whatever it held in memory is gone,
		// so if it was a rank its ring is broken.
		wasActive := old.State == MemberActive
		old.Address, old.Version, old.LastHeartbeat, old.Step, old.Nonce = j.Address, j.Version, now, 0, j.Nonce
		old.JoinSeq, s.NextJoin = s.NextJoin, s.NextJoin+1
		old.Incarnation = old.JoinSeq + 1
		old.State = MemberWaiting
		old.Held = volumeHeld(s, j)
		adopt(s, now, j)
		addHolder(s, j.ID, j.Held)
		s.event(now, "join", "trainer %s rejoined from %s", j.ID, j.Address)
		if wasActive {
			breakRing(s, now, fmt.Sprintf("trainer %s restarted", j.ID))
		}
		reconcile(s, now, "")
		return nil
	}
	s.Members[j.ID] = &Member{ID: j.ID, Address: j.Address, Version: j.Version, JoinSeq: s.NextJoin,
		Incarnation: s.NextJoin + 1, Nonce: j.Nonce, JoinedAt: now, LastHeartbeat: now, State: MemberWaiting,
		Held: volumeHeld(s, j)}
	s.NextJoin++
	adopt(s, now, j)
	addHolder(s, j.ID, j.Held)
	s.event(now, "join", "trainer %s joined from %s", j.ID, j.Address)
	reconcile(s, now, "")
	// A newcomer that brings the members up to min_trainers turns a wait for trainers into a
	// wait for a holder of the newest checkpoint when none of them holds it: say so once (a
	// ring that breaks into that wait is announced by startGeneration).
	if cp := s.HolderWait(); cp != nil && len(s.Members) == s.Run.MinTrainers {
		s.event(now, "generation", "generation %d: world 0, %s", s.Generation.Number, holderWaitText(s, cp))
	}
	return nil
}

// adopt takes into the run the newest committed checkpoint a joining trainer holds when it is
// newer than any the state knows: the coordinators lost their record of it (every replica's
// data wiped, a cluster rebuilt around the trainers' volumes) while the trainer's volume kept
// it. Only a trainer that names the run's config hash is believed, and only for a checkpoint
// step of that config: a run is a pure function of its config, so a checkpoint the cluster of
// an identical config committed is the state this run reaches at that step. A generation that
// runs from an older start is restarted from the adopted one (its steps since were recomputing
// what the checkpoint holds); the final step's checkpoint completes the run.
func adopt(s *State, now int64, j *Join) {
	if j.ConfigHash == "" || j.ConfigHash != s.ConfigHash {
		return
	}
	var best *Held
	for i := range j.Held {
		h := &j.Held[i]
		if checkpointOf(s, *h) && !abandoned(s, *h) && (best == nil || h.Step > best.Step) {
			best = h
		}
	}
	if best == nil {
		return
	}
	if latest := s.LatestCheckpoint(); latest != nil && latest.Step >= best.Step {
		return
	}
	addCommitted(s, Checkpoint{Step: best.Step, SHA256: best.SHA256, Holders: []string{j.ID}, Time: now})
	s.event(now, "checkpoint", "checkpoint at step %d adopted from trainer %s's volume (%.12s): the cluster had no record of it", best.Step, j.ID, best.SHA256)
	if best.Step == s.TotalSteps {
		s.Status, s.Step = StatusSucceeded, s.TotalSteps
		s.event(now, "run", "run succeeded at step %d", best.Step)
		return
	}
	if s.Generation.World > 0 && s.Generation.StartStep < best.Step {
		breakRing(s, now, fmt.Sprintf("restarting from the adopted checkpoint at step %d", best.Step))
	}
}

// checkpointOf reports whether h can be a committed checkpoint of the run: a checkpoint step
// (every CheckpointEvery, or the final step) with a 64-character sha256.
func checkpointOf(s *State, h Held) bool {
	onGrid := h.Step%s.Run.CheckpointEvery == 0 || h.Step == s.TotalSteps
	return h.Step > 0 && h.Step <= s.TotalSteps && onGrid && len(h.SHA256) == 64
}

// volumeHeld returns the checkpoints of j.Held to record as Member.Held: those that can be
// checkpoints of the run, sorted by step (then sha256) without repeats; nil unless j names the
// run's config hash (as for adopt, only such a trainer's volume is believed).
func volumeHeld(s *State, j *Join) []Held {
	if j.ConfigHash == "" || j.ConfigHash != s.ConfigHash {
		return nil
	}
	var out []Held
	for _, h := range j.Held {
		if checkpointOf(s, h) {
			out = append(out, h)
		}
	}
	return retainHeld(out, 0)
}

// retainHeld returns held sorted by step without repeats, cut to its keep newest steps: what a
// rank's volume holds committed after a commit, since the trainer marks the checkpoint committed
// and then prunes its store to the newest keep_checkpoints committed ones (checkpoint.Store.Prune).
// So a member that stays while the run's older commits fall off State.Checkpoints still offers
// what its volume keeps of them to a rollback, and no longer offers what it pruned since joining.
func retainHeld(held []Held, keep int) []Held {
	slices.SortFunc(held, func(a, b Held) int {
		if c := cmpI64(a.Step, b.Step); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	held = slices.Compact(held)
	if keep > 0 && len(held) > keep {
		held = slices.Delete(held, 0, len(held)-keep)
	}
	return held
}

// olderHeld returns the checkpoints older than every one in s.Checkpoints that current members'
// volumes hold (Member.Held) and no rollback abandoned, one per step and sha256 with its holders
// (sorted), newest step first, then by sha256. Size and Generation are 0: the coordinators never
// heard the size, as for an adopted checkpoint. Nil when nothing is committed.
func olderHeld(s *State) []Checkpoint {
	if len(s.Checkpoints) == 0 {
		return nil
	}
	oldest := s.Checkpoints[0].Step
	var out []Checkpoint
	for _, id := range memberIDs(s) {
		for _, h := range s.Members[id].Held {
			if h.Step >= oldest || abandoned(s, h) {
				continue
			}
			i := slices.IndexFunc(out, func(c Checkpoint) bool { return c.Step == h.Step && c.SHA256 == h.SHA256 })
			if i < 0 {
				out = append(out, Checkpoint{Step: h.Step, SHA256: h.SHA256})
				i = len(out) - 1
			}
			if !slices.Contains(out[i].Holders, id) {
				out[i].Holders = append(out[i].Holders, id)
			}
		}
	}
	slices.SortFunc(out, func(a, b Checkpoint) int {
		if c := cmpI64(b.Step, a.Step); c != 0 {
			return c
		}
		return strings.Compare(a.SHA256, b.SHA256)
	})
	return out
}

// olderHeldSteps returns the distinct steps of olderHeld, newest first.
func olderHeldSteps(s *State) []string {
	var steps []string
	for _, c := range olderHeld(s) {
		if n := fmt.Sprint(c.Step); !slices.Contains(steps, n) {
			steps = append(steps, n)
		}
	}
	return steps
}

// abandoned reports whether h is a checkpoint a rollback abandoned: a trainer that was away
// during the rollback still holds it as committed, and adopting it would undo the rollback.
// Every volume's checkpoint in the steps of the abandoned checkpoints no longer listed
// (forgottenAbandoned) counts as abandoned: the list no longer tells which of them are.
// (Callers ask only about steps outside State.Checkpoints.)
func abandoned(s *State, h Held) bool {
	if forgottenAbandoned(s, h.Step) && !slices.Contains(s.Recommitted, h) {
		return true
	}
	for _, a := range s.Abandoned {
		if a.Step == h.Step && a.SHA256 == h.SHA256 {
			return true
		}
	}
	return false
}

// forgottenAbandoned reports whether step lies in the forgotten abandoned steps
// (State.AbandonedRanges).
func forgottenAbandoned(s *State, step int64) bool {
	_, ok := forgottenRange(s, step)
	return ok
}

// forgottenRange returns the forgotten abandoned range holding step (see forgottenAbandoned).
func forgottenRange(s *State, step int64) (StepRange, bool) {
	for _, r := range s.AbandonedRanges {
		if step > r.Above && step <= r.UpTo {
			return r, true
		}
	}
	return StepRange{}, false
}

// planRollback checks a rollback to step to (see State.PlanRollback) and returns the committed
// checkpoints it abandons and the checkpoint the run restarts from (nil for step 0): the
// committed one of that step, or an older one current members hold (olderHeld).
func planRollback(s *State, to int64) ([]Checkpoint, *Checkpoint, *failure) {
	if s.Run == nil {
		return nil, nil, fail("no_run", "no run configured: there is nothing to roll back")
	}
	if s.Status == StatusSucceeded {
		return nil, nil, fail("run_finished", "the run has %s%s; a finished run is not rolled back", s.Status, reasonSuffix(s.Reason))
	}
	// A failed run (a trainer's failure report, ranks that diverged) is revived by a rollback:
	// to the newest committed checkpoint too, abandoning none, and to one no current member
	// holds (its trainers were refused and went away when the run failed); the new generation
	// then waits for a holder to rejoin, as any run whose newest checkpoint is unheld.
	failed := s.Status == StatusFailed
	latest := s.LatestCheckpoint()
	if latest == nil {
		if failed && to == 0 {
			return nil, nil, nil
		}
		return nil, nil, fail("bad_rollback", "no checkpoint is committed yet: there is nothing to roll back")
	}
	steps := make([]string, len(s.Checkpoints))
	for i, c := range s.Checkpoints {
		steps[i] = fmt.Sprint(c.Step)
	}
	committed := strings.Join(steps, ", ")
	var from *Checkpoint
	switch {
	case to < 0:
		return nil, nil, fail("bad_rollback", "step %d is negative (committed checkpoints: %s; or 0 for the start)", to, committed)
	case to == latest.Step && !failed:
		return nil, nil, fail("bad_rollback", "checkpoint %d is the newest committed one, nothing is newer to abandon (committed checkpoints: %s)", latest.Step, committed)
	case to > 0:
		c := findCheckpoint(s, to)
		if c == nil {
			var same []Checkpoint
			for _, o := range olderHeld(s) {
				if o.Step == to {
					same = append(same, o)
				}
			}
			if len(same) == 1 {
				from = &same[0]
				break
			}
			if len(same) > 1 {
				var shas []string
				for _, o := range same {
					shas = append(shas, fmt.Sprintf("%.12s (%s)", o.SHA256, strings.Join(o.Holders, ", ")))
				}
				return nil, nil, fail("bad_rollback", "members hold different checkpoints at step %d: %s; roll back to another step (committed checkpoints: %s; or 0 for the start)",
					to, strings.Join(shas, ", "), committed)
			}
			for _, a := range slices.Backward(s.Abandoned) {
				if a.Step == to {
					return nil, nil, fail("bad_rollback", "checkpoint %d was abandoned by the rollback to step %d (committed checkpoints: %s; or 0 for the start)", to, a.RolledBackTo, committed)
				}
			}
			if r, ok := forgottenRange(s, to); ok && memberHolds(s, to) {
				return nil, nil, fail("bad_rollback", "step %d lies in steps %d..%d, where rollbacks abandoned checkpoints no longer listed (a member's copy there cannot be told from an abandoned one; committed checkpoints: %s; or 0 for the start)",
					to, r.Above+1, r.UpTo, committed)
			}
			if older := olderHeldSteps(s); len(older) > 0 {
				return nil, nil, fail("bad_rollback", "step %d is neither a committed checkpoint nor an older one a member holds (committed checkpoints: %s; older ones members hold: %s; or 0 for the start)",
					to, committed, strings.Join(older, ", "))
			}
			return nil, nil, fail("bad_rollback", "step %d is not a committed checkpoint (committed checkpoints: %s; or 0 for the start)", to, committed)
		}
		if !heldByMember(s, c) && !failed {
			var held []string
			for i := len(s.Checkpoints) - 1; i >= 0; i-- {
				if heldByMember(s, &s.Checkpoints[i]) {
					held = append(held, fmt.Sprint(s.Checkpoints[i].Step))
				}
			}
			held = append(held, olderHeldSteps(s)...)
			way := "no member holds any committed checkpoint: roll back to 0 (the start)"
			if len(held) > 0 {
				way = "checkpoints a member holds: " + strings.Join(held, ", ") + " (or 0 for the start)"
			}
			return nil, nil, fail("bad_rollback", "no current member holds checkpoint %d (its holders %s are gone; members: %s); %s",
				to, orDash(strings.Join(c.Holders, ", ")), orDash(strings.Join(memberIDs(s), ", ")), way)
		}
		cp := *c
		cp.Holders = slices.Clone(c.Holders)
		from = &cp
	}
	var abandon []Checkpoint
	for _, c := range s.Checkpoints {
		if c.Step > to {
			abandon = append(abandon, c)
		}
	}
	return abandon, from, nil
}

// rollback applies a Rollback: see its doc.
func rollback(s *State, now int64, r *Rollback) *failure {
	abandon, restore, f := planRollback(s, r.ToStep)
	if f != nil {
		return f
	}
	if s.Status == StatusFailed {
		s.event(now, "run", "run revived by the rollback to step %d (it had failed: %s)", r.ToStep, s.Reason)
		s.Status, s.Reason = StatusRunning, ""
	}
	// The commits between the restart point and the oldest listed one were pruned from
	// Checkpoints by keep_checkpoints before the rollback (a rollback to step 0, or to an older
	// copy a member holds): they belong to the line given up, yet no list names their sha256s.
	// Their steps join the forgotten abandoned ones, so a volume's copy there is never adopted
	// nor taken back.
	// The line's own commits at forgotten steps (Recommitted) after the restart point are among
	// them.
	if len(s.Checkpoints) > 0 && r.ToStep < s.Checkpoints[0].Step {
		oldest := s.Checkpoints[0].Step
		pruned := (oldest - 1) / s.Run.CheckpointEvery * s.Run.CheckpointEvery
		for _, h := range s.Recommitted {
			pruned = max(pruned, h.Step)
		}
		if pruned > r.ToStep {
			forgetAbandoned(s, r.ToStep, pruned)
		}
	}
	s.Recommitted = slices.DeleteFunc(s.Recommitted, func(h Held) bool { return h.Step > r.ToStep })
	s.Checkpoints = slices.DeleteFunc(s.Checkpoints, func(c Checkpoint) bool { return c.Step > r.ToStep })
	if restore != nil && findCheckpoint(s, restore.Step) == nil {
		// An older checkpoint a member's volume holds: it becomes the committed checkpoint the
		// run restarts from, like an adopted one (Size 0, Generation 0).
		restore.Time = now
		addCommitted(s, *restore)
		s.event(now, "checkpoint", "checkpoint at step %d taken back from the volume of %s (%.12s): it was no longer on record",
			restore.Step, strings.Join(restore.Holders, ", "), restore.SHA256)
	}
	var names []string
	for _, c := range abandon {
		s.Abandoned = append(s.Abandoned, AbandonedCheckpoint{Checkpoint: c, RolledBackTo: r.ToStep, AbandonedAt: now})
		names = append(names, fmt.Sprintf("%d (%.12s)", c.Step, c.SHA256))
	}
	if extra := len(s.Abandoned) - MaxAbandoned; extra > 0 {
		for _, a := range s.Abandoned[:extra] {
			forgetAbandoned(s, a.RolledBackTo, a.Step)
		}
		s.Abandoned = slices.Delete(s.Abandoned, 0, extra)
	}
	s.Loss.Truncate(r.ToStep)
	from := fmt.Sprintf("checkpoint %d", r.ToStep)
	if r.ToStep == 0 {
		from = "the start (step 0)"
	}
	gone := "abandoned committed checkpoint(s) " + strings.Join(names, ", ")
	if len(names) == 0 {
		gone = "no checkpoint abandoned"
	}
	s.event(now, "rollback", "rolled back to %s: %s; the steps after %d are recomputed", from, gone, r.ToStep)
	// startGeneration takes the newest committed checkpoint, now the one rolled back to.
	startGeneration(s, now, fmt.Sprintf("rolled back to step %d", r.ToStep))
	return nil
}

// forgetAbandoned adds (above, upTo] to the forgotten abandoned steps (State.AbandonedRanges):
// abandoned checkpoints whose sha256s are no longer (or were never) listed, up to step upTo,
// given up by a rollback to step above.
func forgetAbandoned(s *State, above, upTo int64) {
	s.AbandonedRanges = addStepRange(s.AbandonedRanges, StepRange{Above: above, UpTo: upTo})
}

// addStepRange returns the disjoint ascending ranges rs with r added: ranges that overlap or
// touch r merge with it; past MaxAbandonedRanges the two with the smallest gap between them
// (the first such pair) merge.
func addStepRange(rs []StepRange, r StepRange) []StepRange {
	out := make([]StepRange, 0, len(rs)+1)
	placed := false
	for _, x := range rs {
		switch {
		case x.UpTo < r.Above:
			out = append(out, x)
		case r.UpTo < x.Above:
			if !placed {
				out, placed = append(out, r), true
			}
			out = append(out, x)
		default: // overlapping or touching: one range
			r = StepRange{Above: min(r.Above, x.Above), UpTo: max(r.UpTo, x.UpTo)}
		}
	}
	if !placed {
		out = append(out, r)
	}
	for len(out) > MaxAbandonedRanges {
		best := 0
		for i := 1; i+1 < len(out); i++ {
			if out[i+1].Above-out[i].UpTo < out[best+1].Above-out[best].UpTo {
				best = i
			}
		}
		out[best].UpTo = out[best+1].UpTo
		out = slices.Delete(out, best+1, best+2)
	}
	return out
}

// memberHolds reports whether a current member's volume holds a checkpoint at step.
func memberHolds(s *State, step int64) bool {
	for _, m := range s.Members {
		if slices.ContainsFunc(m.Held, func(h Held) bool { return h.Step == step }) {
			return true
		}
	}
	return false
}

// memberIDs returns the current members' ids, sorted.
func memberIDs(s *State) []string {
	ids := make([]string, 0, len(s.Members))
	for id := range s.Members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// addCommitted records c as committed: the list stays in step order and keeps the newest
// KeepCheckpoints; reports pending for c's step or earlier ones are dropped.
func addCommitted(s *State, c Checkpoint) {
	s.Checkpoints = append(s.Checkpoints, c)
	slices.SortFunc(s.Checkpoints, func(a, b Checkpoint) int { return cmpI64(a.Step, b.Step) })
	if extra := len(s.Checkpoints) - s.Run.KeepCheckpoints; extra > 0 {
		// A pruned commit at a forgotten abandoned step stays known as the line's own.
		for _, p := range s.Checkpoints[:extra] {
			if h := (Held{Step: p.Step, SHA256: p.SHA256}); forgottenAbandoned(s, p.Step) && !slices.Contains(s.Recommitted, h) {
				s.Recommitted = append(s.Recommitted, h)
			}
		}
		if over := len(s.Recommitted) - MaxAbandoned; over > 0 {
			s.Recommitted = slices.Delete(s.Recommitted, 0, over)
		}
		s.Checkpoints = slices.Delete(s.Checkpoints, 0, extra)
	}
	for step := range s.Pending {
		if step <= c.Step {
			delete(s.Pending, step)
		}
	}
}

// addHolder records id as a holder of the committed checkpoints it says it has (same step and
// hash), so that restarted trainers can serve their volumes to peers.
func addHolder(s *State, id string, held []Held) {
	for _, h := range held {
		for i := range s.Checkpoints {
			c := &s.Checkpoints[i]
			if c.Step == h.Step && c.SHA256 == h.SHA256 && !slices.Contains(c.Holders, id) {
				c.Holders = append(c.Holders, id)
				slices.Sort(c.Holders)
				c.Holders = trimDeparted(s, c.Holders)
			}
		}
	}
	if cp := s.Generation.Checkpoint; cp != nil {
		if latest := findCheckpoint(s, cp.Step); latest != nil {
			cp.Holders = slices.Clone(latest.Holders)
		}
	}
}

// trimDeparted returns the sorted holders without the first of those that are no longer
// members (in id order) past MaxDepartedHolders of them: trainers that come and go under new
// ids (restarts that draw new host names) would otherwise grow the list of a checkpoint that
// stays the newest one for ever. A dropped holder that rejoins with the checkpoint on its
// volume is listed again (join).
func trimDeparted(s *State, holders []string) []string {
	departed := 0
	for _, id := range holders {
		if s.Members[id] == nil {
			departed++
		}
	}
	return slices.DeleteFunc(holders, func(id string) bool {
		if departed > MaxDepartedHolders && s.Members[id] == nil {
			departed--
			return true
		}
		return false
	})
}

// heldByMember reports whether a current member holds c (can load it or serve it to peers).
func heldByMember(s *State, c *Checkpoint) bool {
	for _, h := range c.Holders {
		if _, ok := s.Members[h]; ok {
			return true
		}
	}
	return false
}

func findCheckpoint(s *State, step int64) *Checkpoint {
	for i := range s.Checkpoints {
		if s.Checkpoints[i].Step == step {
			return &s.Checkpoints[i]
		}
	}
	return nil
}

// remove deletes members; if one was a rank, the ring is broken and a new generation follows.
func remove(s *State, now int64, ids []string, why string) {
	broken := false
	for _, id := range ids {
		m := s.Members[id]
		if m.State == MemberActive {
			broken = true
		}
		delete(s.Members, id)
		s.event(now, "leave", "trainer %s removed: %s", id, why)
	}
	if broken {
		breakRing(s, now, fmt.Sprintf("lost %s (%s)", strings.Join(ids, ", "), why))
	}
	reconcile(s, now, "")
}

// breakRing ends the current generation: its surviving ranks return to waiting, and the next
// reconcile starts a new generation from the last committed checkpoint (or a world-0 one).
func breakRing(s *State, now int64, why string) {
	if s.Generation.World == 0 {
		return
	}
	// Survivors keep their ring order; startGeneration drops the missing and may add waiting
	// members, all restarting from the last committed checkpoint.
	startGeneration(s, now, why)
}

// reconcile starts a generation when none is running and enough members wait. It does not
// disturb a running generation: newcomers enter at the next checkpoint commit.
func reconcile(s *State, now int64, why string) {
	if s.Run == nil || s.Status.Terminal() || s.Generation.World > 0 {
		return
	}
	if len(s.Members) < s.Run.MinTrainers {
		return
	}
	if cp := s.LatestCheckpoint(); cp != nil && !heldByMember(s, cp) {
		return // still waiting for a holder (startGeneration or join says so when the wait begins)
	}
	startGeneration(s, now, why)
}

// startGeneration commits generation Number+1 from the last committed checkpoint, with the
// current ranks first (in ring order), then waiting members in join order, up to MaxTrainers.
// With fewer than MinTrainers members it commits a world-0 generation: everyone waits.
func startGeneration(s *State, now int64, why string) {
	var ring []string
	for _, id := range s.Generation.Ring {
		if _, ok := s.Members[id]; ok {
			ring = append(ring, id)
		}
	}
	waiting := make([]*Member, 0, len(s.Members))
	for _, m := range s.Members {
		if !slices.Contains(ring, m.ID) {
			waiting = append(waiting, m)
		}
	}
	slices.SortFunc(waiting, func(a, b *Member) int { return cmpU64(a.JoinSeq, b.JoinSeq) })
	for _, m := range waiting {
		ring = append(ring, m.ID)
	}
	if len(ring) > s.Run.MaxTrainers {
		ring = ring[:s.Run.MaxTrainers]
	}
	// A finished run trains no more: losing a member after the last step must not send the
	// rest after a checkpoint nobody serves any longer (found by chaos runs).
	if len(ring) < s.Run.MinTrainers || s.Status.Terminal() {
		ring = nil
	}
	// The ranks load the newest committed checkpoint from their volumes or fetch it from a
	// member that holds it. When no member holds it (its holders left or were dropped before a
	// newcomer fetched it), a generation from it could not load: the newcomer would fail and
	// crash-loop. Nor can it start from an older one: a recomputed checkpoint records its
	// generation, so it would not hash to the committed one. Everyone waits for a holder to come
	// back instead (joining with its volume makes it one again).
	cp := s.LatestCheckpoint()
	unheld := cp != nil && len(ring) > 0 && !heldByMember(s, cp)
	if unheld {
		ring = nil
	}
	g := Generation{Number: s.Generation.Number + 1, Ring: ring, World: len(ring), StartedAt: now}
	if cp != nil {
		g.StartStep, g.Checkpoint = cp.Step, cp
	}
	for _, m := range s.Members {
		m.State, m.Step = MemberWaiting, 0
	}
	for _, id := range ring {
		s.Members[id].State = MemberActive
		s.Members[id].Step = g.StartStep
	}
	s.Generation, s.Pending, s.Step = g, nil, g.StartStep
	if g.World > 0 && s.Status == StatusPending {
		s.Status = StatusRunning
	}
	text := fmt.Sprintf("generation %d: world %d", g.Number, g.World)
	if g.World > 0 {
		text += fmt.Sprintf(" [%s] from step %d", strings.Join(ring, " "), g.StartStep)
	} else if s.Status.Terminal() {
		text += fmt.Sprintf(", the run has %s", s.Status)
	} else if unheld {
		text += ", " + holderWaitText(s, cp)
	} else {
		text += fmt.Sprintf(", waiting for %d trainers (have %d)", s.Run.MinTrainers, len(s.Members))
	}
	if why != "" {
		text += " (" + why + ")"
	}
	s.event(now, "generation", "%s", text)
}

// holderWaitText says that the run waits for a holder of cp and how an operator gets it going
// when no holder can come back.
func holderWaitText(s *State, cp *Checkpoint) string {
	return fmt.Sprintf("waiting for a holder of checkpoint %d (%s) to rejoin; if none can, roll back: ddpm checkpoint rollback --coordinator ADDR --to-step %d",
		cp.Step, strings.Join(cp.Holders, " "), s.RollbackTarget())
}

func progress(s *State, now int64, p *Progress) *failure {
	if s.Run == nil {
		return fail("no_run", "no run configured")
	}
	m, ok := s.Members[p.ID]
	if !ok {
		return fail("unknown_member", "%q is not a member; join again", p.ID)
	}
	if f := checkIncarnation(m, p.Incarnation); f != nil {
		return f
	}
	if p.Generation != s.Generation.Number {
		return fail("stale_generation", "report for generation %d, current is %d", p.Generation, s.Generation.Number)
	}
	rank := s.Generation.Rank(p.ID)
	if rank < 0 {
		return fail("not_in_ring", "%q is not a rank of generation %d", p.ID, s.Generation.Number)
	}
	// The run succeeds when its final checkpoint commits (see checkpoint), which may come before
	// the final step's progress report: that report still records its loss point.
	if s.Status.Terminal() && (s.Status != StatusSucceeded || p.Failure != "") {
		return fail("run_finished", "the run has %s%s", s.Status, reasonSuffix(s.Reason))
	}
	m.LastHeartbeat = max(m.LastHeartbeat, now)
	if p.Failure != "" {
		// A failure report names no step of its own (the trainer reports where it failed, not a
		// step it trained): the member's last reported step is where it stood.
		s.Status, s.Reason = StatusFailed, fmt.Sprintf("trainer %s at step %d: %s", p.ID, max(p.Step, m.Step), p.Failure)
		s.event(now, "run", "run failed: %s", s.Reason)
		return nil
	}
	if p.Step < s.Generation.StartStep || p.Step > s.TotalSteps {
		return fail("bad_command", "step %d outside generation %d's range [%d, %d]", p.Step, s.Generation.Number, s.Generation.StartStep, s.TotalSteps)
	}
	m.Step = p.Step
	s.Step = max(s.Step, p.Step)
	// A rank past its generation's start step has loaded the start checkpoint (from its volume
	// or a peer) and keeps it: it can serve it, so a later generation may start from it after
	// the checkpoint's first holders are gone (startGeneration).
	if cp := s.Generation.Checkpoint; cp != nil && p.Step > cp.Step && !slices.Contains(cp.Holders, p.ID) {
		addHolder(s, p.ID, []Held{{Step: cp.Step, SHA256: cp.SHA256}})
	}
	// The loss is global (all-reduced), so one rank's report describes the whole cluster.
	if rank == 0 {
		pt := p.Point
		pt.Step, pt.Time = p.Step, now
		if pointFinite(pt) {
			// By the rules of the release that wrote the entry: a replica replaying older entries
			// compacts them as their leader did.
			if s.Release != nil && s.Release.Rules >= 3 {
				s.Loss.AddEven(pt)
			} else {
				s.Loss.Add(pt)
			}
		} else {
			s.event(now, "loss", "non-finite metrics at step %d not recorded", p.Step)
		}
	}
	return nil
}

// pointFinite reports whether the metrics of p that the history records are finite: a skipped
// step's loss, quartiles and gradient norm are not recorded, so they are not asked.
func pointFinite(p LossPoint) bool {
	xs := []float64{p.LR, p.ImagesPerSec, p.ComputeSec, p.AllReduceSec, p.WaitSec, p.BusBW}
	if p.Skipped == 0 {
		xs = append(xs, p.Loss, p.GradNorm)
		xs = append(xs, p.LossQuartiles[:]...)
	}
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}

func checkpoint(s *State, now int64, r *CheckpointReport) *failure {
	if s.Run == nil {
		return fail("no_run", "no run configured")
	}
	m, ok := s.Members[r.ID]
	if !ok {
		return fail("unknown_member", "%q is not a member; join again", r.ID)
	}
	if f := checkIncarnation(m, r.Incarnation); f != nil {
		return f
	}
	if r.Generation != s.Generation.Number {
		return fail("stale_generation", "checkpoint report for generation %d, current is %d", r.Generation, s.Generation.Number)
	}
	if s.Generation.Rank(r.ID) < 0 {
		return fail("not_in_ring", "%q is not a rank of generation %d", r.ID, s.Generation.Number)
	}
	if s.Status == StatusFailed {
		return fail("run_finished", "the run has failed%s", reasonSuffix(s.Reason))
	}
	if r.Step <= s.Generation.StartStep || r.Step > s.TotalSteps || (r.Step%s.Run.CheckpointEvery != 0 && r.Step != s.TotalSteps) {
		return fail("bad_checkpoint", "step %d is not a checkpoint step after %d (every %d, last %d)", r.Step, s.Generation.StartStep, s.Run.CheckpointEvery, s.TotalSteps)
	}
	if len(r.SHA256) != 64 || r.Size <= 0 {
		return fail("bad_checkpoint", "checkpoint report needs a hex sha256 and a positive size")
	}
	if done := findCheckpoint(s, r.Step); done != nil {
		// Committed already (a rank reporting late after a duplicate, or a rejoined holder).
		if done.SHA256 != r.SHA256 {
			diverge(s, now, r.Step, fmt.Sprintf("%s has %.12s, committed %.12s", r.ID, r.SHA256, done.SHA256))
			return nil
		}
		addHolder(s, r.ID, []Held{{Step: r.Step, SHA256: r.SHA256}})
		return nil
	}
	if s.Pending == nil {
		s.Pending = map[int64]map[string]Report{}
	}
	reports := s.Pending[r.Step]
	if reports == nil {
		reports = map[string]Report{}
		s.Pending[r.Step] = reports
	}
	reports[r.ID] = Report{SHA256: r.SHA256, Size: r.Size}
	// Compare in ring order so the message is the same on every replica.
	var first *Report
	firstID := ""
	for _, id := range s.Generation.Ring {
		rep, ok := reports[id]
		if !ok {
			continue
		}
		if first == nil {
			first, firstID = &rep, id
			continue
		}
		if rep.SHA256 != first.SHA256 || rep.Size != first.Size {
			diverge(s, now, r.Step, fmt.Sprintf("%s has %.12s (%d bytes), %s has %.12s (%d bytes)",
				firstID, first.SHA256, first.Size, id, rep.SHA256, rep.Size))
			return nil
		}
	}
	if len(reports) < s.Generation.World {
		return nil
	}
	holders := slices.Clone(s.Generation.Ring)
	slices.Sort(holders)
	addCommitted(s, Checkpoint{Step: r.Step, SHA256: r.SHA256, Size: r.Size,
		Generation: s.Generation.Number, Holders: holders, Time: now})
	for _, id := range holders {
		if m := s.Members[id]; m != nil {
			m.Held = retainHeld(append(m.Held, Held{Step: r.Step, SHA256: r.SHA256}), s.Run.KeepCheckpoints)
		}
	}
	s.event(now, "checkpoint", "checkpoint at step %d committed (%.12s, %d bytes)", r.Step, r.SHA256, r.Size)
	// The run has succeeded once its final checkpoint is committed, not when a rank reports the
	// final step: until the commit a rank may still die, and a run declared done before it would
	// never commit its last checkpoint (the terminal status ends the ring), leaving an older one
	// as the run's result.
	if r.Step == s.TotalSteps && s.Status != StatusSucceeded {
		s.Status, s.Step = StatusSucceeded, s.TotalSteps
		s.event(now, "run", "run succeeded at step %d", r.Step)
	}
	// A committed checkpoint is the free moment to grow the ring: no work is lost. (Not after
	// the final step: there is nothing left to train.)
	if len(s.Members) > s.Generation.World && s.Generation.World < s.Run.MaxTrainers && !s.Status.Terminal() && r.Step < s.TotalSteps {
		startGeneration(s, now, "growing at a committed checkpoint")
	}
	return nil
}

// diverge fails the run: ranks that should hold bitwise-identical parameters do not.
func diverge(s *State, now int64, step int64, detail string) {
	s.Status = StatusFailed
	s.Reason = fmt.Sprintf("ranks diverged at step %d: %s", step, detail)
	s.event(now, "run", "run failed: %s", s.Reason)
}

func (s *State) event(now int64, kind, format string, args ...any) {
	s.Events = append(s.Events, Event{Time: now, Generation: s.Generation.Number, Kind: kind, Text: fmt.Sprintf(format, args...)})
	if len(s.Events) > MaxEvents {
		s.Events = slices.Delete(s.Events, 0, len(s.Events)-MaxEvents)
	}
}

func reasonSuffix(r string) string {
	if r == "" {
		return ""
	}
	return ": " + r
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpI64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
