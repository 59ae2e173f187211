// Package fsm is the coordinator's replicated state machine: a pure function Apply(state,
// command) that every raft replica runs on the same log and so reaches the same state.
//
// Purity is the contract: Apply reads no clock, draws no random numbers, does no I/O and iterates
// no map in an order that reaches the result. Time and identity travel inside each Command (the
// proposing replica stamps Command.Time); request ids make a retried command apply once.
//
// The rules (../../shared/DESIGN.md section 5):
//   - A run config is submitted once (validated, hashed); trainers whose config hash differs are
//     refused.
//   - Members join, heartbeat, and are removed by an Expire command when their last heartbeat is
//     older than the run's heartbeat timeout at the command's time.
//   - A generation is a ring of member ids (rank = index), its world size and its start step, the
//     step of the last committed checkpoint. A broken ring (a member lost or restarted) ends the
//     generation at once; newcomers wait for the next committed checkpoint, where a larger ring
//     starts without losing work. A generation starts only with MinTrainers members and takes at
//     most MaxTrainers; with fewer the cluster waits (world 0).
//   - A checkpoint commits when every rank of the generation has reported the same sha256 for its
//     step; a disagreement fails the run with "ranks diverged at step S".
//   - The run succeeds when a rank reports the final step, fails when a trainer reports a failure.
//   - Rank 0's progress reports make the loss history (LossHistory: at most DefaultLossCapacity
//     points, older ones merged pairwise); a step skipped for a non-finite gradient stays in it,
//     marked Skipped, without a loss. Every history the State keeps is bounded (MaxEvents,
//     MaxDedup, MaxAbandoned, MaxAbandonedRanges, MaxDepartedHolders, keep_checkpoints), so
//     its size (a snapshot's) follows the cluster's, not the run's length: about 0.6 MB for a
//     million steps (TestLongRunStateBounded).
//   - A generation starts only when a member holds the newest committed checkpoint. When its
//     holders are gone for good, an operator's Rollback abandons the committed checkpoints after
//     an older one that a member holds (or all of them: step 0) and the run restarts from there;
//     the abandoned ones stay listed in State.Abandoned. A rollback also revives a failed run
//     (to a committed checkpoint, its newest one included, or to 0); a succeeded one is final.
//   - Each leader's first command of its term is its release record (Release: binary version and
//     RulesVersion), kept as State.Release; replicas of other rules stop there (the coordinator
//     package's ReleaseMismatchError), since they would apply the log differently.
package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"ddpm/config"
)

// RulesVersion numbers the rules by which Apply turns a log into a State. It must be bumped in
// every release that changes how any command applies (what a command changes in the State, what
// it refuses, which fields snapshots carry with a meaning older releases lack), and only then:
// replicas of two rules versions may reach different states from one log, so a replica that
// follows a leader of another rules version stops (see Release and coordinator.Replica), while
// replicas that differ only in binary version keep running together. 1 is the rules of the first
// release that records them (rollbacks keeping AbandonedRanges and Recommitted and reviving a
// failed run, a failure's reason naming the member's last step); releases before it have none.
// 2: a progress report of a skipped step (Progress.Point.Skipped, from the report's skipped
// field) is recorded as a skipped point without a loss (LossPoint.Skipped), where rules 1 read
// the command without that field and recorded a trained step of loss 0; a checkpoint lists at
// most MaxDepartedHolders holders that are no longer members. 3: the loss history compacts by
// LossHistory.AddEven once a release record of rules 3 or later has applied (entries before it
// as rules 2 did), so that a long run's history keeps spans of similar size.
const RulesVersion = 3

// Errors of Apply, carried in Result and rebuilt by Result.Err; test with errors.Is.
var (
	// ErrNoRun: the command needs a run config and none was submitted yet.
	ErrNoRun = errors.New("no run config submitted yet")
	// ErrInvalidConfig: the submitted run config breaks a rule of config.Run.Validate.
	ErrInvalidConfig = errors.New("invalid run config")
	// ErrConfigMismatch: a different run config is already in force, or a trainer runs another one.
	ErrConfigMismatch = errors.New("run config mismatch")
	// ErrUnknownMember: the member id is not (or no longer) a member; the trainer must join again.
	ErrUnknownMember = errors.New("unknown member")
	// ErrStaleGeneration: the command names a generation that is not the current one.
	ErrStaleGeneration = errors.New("stale generation")
	// ErrNotInRing: the member is not a rank of the current generation.
	ErrNotInRing = errors.New("member is not in the current ring")
	// ErrBadCheckpoint: a checkpoint report for a step that is not a checkpoint step of this
	// generation.
	ErrBadCheckpoint = errors.New("bad checkpoint report")
	// ErrRunFinished: the run has succeeded or failed; it takes no more work.
	ErrRunFinished = errors.New("run finished")
	// ErrIDInUse: a trainer joined with the id of a live member at another address (two
	// processes given the same --id); the member keeps it.
	ErrIDInUse = errors.New("trainer id in use")
	// ErrStaleIncarnation: a member command names an incarnation of its id other than the
	// current one: the id was admitted again since (Join) and belongs to a newer process, so the
	// sender must stop without touching the run. Result.Incarnation and Result.Address name the
	// current incarnation and its address. Commands with incarnation 0 are not checked.
	ErrStaleIncarnation = errors.New("stale incarnation")
	// ErrBadRollback: a rollback that cannot be done: its step is not a committed checkpoint,
	// no member holds it, or nothing is newer than it. The message says which.
	ErrBadRollback = errors.New("cannot roll back")
	// ErrBadCommand: a malformed command (a programming error of the proposer, reported rather
	// than panicking so that one bad entry cannot crash every replica).
	ErrBadCommand = errors.New("bad command")
)

// codes maps the stable code stored in a Result (and in snapshots) to its sentinel.
var codes = map[string]error{
	"no_run":            ErrNoRun,
	"invalid_config":    ErrInvalidConfig,
	"config_mismatch":   ErrConfigMismatch,
	"unknown_member":    ErrUnknownMember,
	"stale_generation":  ErrStaleGeneration,
	"not_in_ring":       ErrNotInRing,
	"bad_checkpoint":    ErrBadCheckpoint,
	"run_finished":      ErrRunFinished,
	"bad_command":       ErrBadCommand,
	"id_in_use":         ErrIDInUse,
	"stale_incarnation": ErrStaleIncarnation,
	"bad_rollback":      ErrBadRollback,
}

// Status is the run's status.
type Status string

// Run statuses. Succeeded and Failed are terminal.
const (
	StatusNone      Status = ""          // no run config yet
	StatusPending   Status = "pending"   // configured, no generation has started yet
	StatusRunning   Status = "running"   // a generation has started
	StatusSucceeded Status = "succeeded" // a rank reported the final step
	StatusFailed    Status = "failed"    // see State.Reason
)

// Terminal reports whether s is succeeded or failed.
func (s Status) Terminal() bool { return s == StatusSucceeded || s == StatusFailed }

// MemberState is a member's place in the current generation.
type MemberState string

// Member states.
const (
	MemberActive  MemberState = "active"  // a rank of the current generation
	MemberWaiting MemberState = "waiting" // joined; enters at the next generation that has room
)

// Member is one trainer known to the coordinator. Times are Unix nanoseconds from command times.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"` // the trainer's all-reduce / checkpoint-transfer address
	Version string `json:"version"` // the trainer's binary version
	JoinSeq uint64 `json:"join_seq"`
	// Incarnation numbers this admission of the id: JoinSeq+1, given at every Join (a rejoin
	// too), so it is unique in the cluster's history, never 0, and grows with each admission.
	// Member commands that carry another non-zero incarnation are refused (ErrStaleIncarnation).
	Incarnation uint64 `json:"incarnation"`
	// Nonce is the process nonce the current incarnation joined with (Join.Nonce): it tells the
	// process a stale refusal reaches whether the id's current incarnation is its own rejoin or
	// another process's, whatever their addresses. Empty for a client older than nonces, and in
	// snapshots written before them.
	Nonce         string      `json:"nonce,omitempty"`
	JoinedAt      int64       `json:"joined_at"`
	LastHeartbeat int64       `json:"last_heartbeat"`
	State         MemberState `json:"state"`
	Step          int64       `json:"step"` // last step it reported in the current generation
	// Held is the committed checkpoints the member's volume holds: Join.Held at each (re)join,
	// kept only from a trainer that named the run's config hash and only for checkpoint steps of
	// the run, then each checkpoint it commits as a rank, cut to the newest keep_checkpoints as
	// the trainer prunes its volume (retainHeld); ascending by step. A rollback may restart the run
	// from one of them after it fell off State.Checkpoints (see State.PlanRollback). Absent from
	// snapshots written before it existed.
	Held []Held `json:"held,omitempty"`
}

// CheckIncarnation returns the refusal of a command of m that names incarnation inc (Code
// "stale_incarnation", Err() wrapping ErrStaleIncarnation, Incarnation, Address and Nonce naming
// m's current incarnation) when inc is neither 0 (a client older than incarnations: not checked)
// nor m's current incarnation; else the zero Result. Apply refuses member commands with it.
func (m *Member) CheckIncarnation(inc uint64) Result {
	if inc == 0 || inc == m.Incarnation {
		return Result{}
	}
	return Result{Code: "stale_incarnation", Incarnation: m.Incarnation, Address: m.Address, Nonce: m.Nonce,
		Message: fmt.Sprintf("trainer %q incarnation %d is not the current one: the id was admitted again as incarnation %d at %s",
			m.ID, inc, m.Incarnation, m.Address)}
}

// Generation is one ring of trainers. World 0 means "no ring: waiting for MinTrainers".
type Generation struct {
	Number    uint64   `json:"number"`
	Ring      []string `json:"ring"` // member ids; rank r is Ring[r]
	World     int      `json:"world"`
	StartStep int64    `json:"start_step"`
	// Checkpoint is the committed checkpoint the ranks load (Step == StartStep); nil when the
	// generation starts from step 0 with fresh parameters.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
	StartedAt  int64       `json:"started_at"`
}

// Rank returns id's rank in g, or -1.
func (g *Generation) Rank(id string) int { return slices.Index(g.Ring, id) }

// Checkpoint is a committed checkpoint: every rank of Generation reported SHA256 for Step.
type Checkpoint struct {
	Step   int64  `json:"step"`
	SHA256 string `json:"sha256"`
	// Size is the bytes of the arenas the ranks reported; 0 (with Generation 0) for a checkpoint
	// adopted from a trainer's volume, whose size the coordinators never heard (see adopt).
	Size       int64  `json:"size"`
	Generation uint64 `json:"generation"`
	// Holders are the ids holding a verified copy, sorted: current members and members that
	// left since, these cut to MaxDepartedHolders whenever a holder is added.
	Holders []string `json:"holders"`
	Time    int64    `json:"time"`
}

// AbandonedCheckpoint is a committed checkpoint that a rollback gave up (see Rollback): the run
// went back to RolledBackTo and recomputes the steps after it, so this one is no restart point
// any more and is never adopted again from a trainer's volume.
type AbandonedCheckpoint struct {
	Checkpoint
	RolledBackTo int64 `json:"rolled_back_to"`
	AbandonedAt  int64 `json:"abandoned_at"` // Unix ns, the rollback command's time
}

// Report is one rank's checkpoint report awaiting its peers.
type Report struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Event is one line of the cluster's timeline (joins, losses, generations, checkpoints).
type Event struct {
	Time       int64  `json:"time"`
	Generation uint64 `json:"generation"`
	Kind       string `json:"kind"`
	Text       string `json:"text"`
}

// Result is Apply's outcome: Code is "" on success, else the code of one of the package errors,
// with Message giving the details. Generation is the current generation number after the command.
// Incarnation is, for a Join, the incarnation it admitted the member as, and for a
// stale_incarnation refusal the member's current incarnation, with Address its current address
// and Nonce the process nonce it joined with; they are empty otherwise.
type Result struct {
	Code        string `json:"code,omitempty"`
	Message     string `json:"message,omitempty"`
	Generation  uint64 `json:"generation"`
	Incarnation uint64 `json:"incarnation,omitempty"`
	Address     string `json:"address,omitempty"`
	Nonce       string `json:"nonce,omitempty"`
}

// Err rebuilds the error: nil on success, else the sentinel wrapped with the message.
func (r Result) Err() error {
	if r.Code == "" {
		return nil
	}
	sentinel, ok := codes[r.Code]
	if !ok {
		sentinel = ErrBadCommand
	}
	if r.Message == "" {
		return sentinel
	}
	return fmt.Errorf("%w: %s", sentinel, r.Message)
}

// Bounds of the state's histories.
const (
	// MaxEvents bounds the timeline; the oldest events go first.
	MaxEvents = 256
	// MaxDedup bounds the request-id table; a retry older than this many commands applies again.
	MaxDedup = 4096
	// MaxAbandoned bounds the list of abandoned checkpoints; the oldest go first, and
	// State.AbandonedRanges keeps their steps so that they stay abandoned.
	MaxAbandoned = 64
	// MaxAbandonedRanges bounds State.AbandonedRanges; past it the two closest ranges merge.
	MaxAbandonedRanges = 64
	// MaxDepartedHolders bounds the holders of a committed checkpoint that are no longer
	// members (kept so that an operator knows whom to bring back); past it, as a holder is
	// added, the first of them in id order go.
	MaxDepartedHolders = 16
)

// StepRange is the steps (Above, UpTo].
type StepRange struct {
	Above int64 `json:"above"`
	UpTo  int64 `json:"up_to"`
}

// State is the whole replicated state. Its zero value is the empty cluster. Snapshots are its
// JSON encoding and replace it whole.
type State struct {
	Run        *config.Run `json:"run,omitempty"`
	ConfigHash string      `json:"config_hash,omitempty"`
	// DatasetFingerprint is the run's pinned dataset fingerprint (from the config).
	DatasetFingerprint string `json:"dataset_fingerprint,omitempty"`
	Status             Status `json:"status"`
	Reason             string `json:"reason,omitempty"`
	TotalSteps         int64  `json:"total_steps"`
	Step               int64  `json:"step"` // the furthest step reported in the current generation

	Members    map[string]*Member `json:"members"`
	NextJoin   uint64             `json:"next_join"`
	Generation Generation         `json:"generation"`
	// Pending holds the current generation's checkpoint reports: step -> member id -> report.
	Pending     map[int64]map[string]Report `json:"pending,omitempty"`
	Checkpoints []Checkpoint                `json:"checkpoints"` // committed, ascending step
	// Abandoned are the committed checkpoints rollbacks gave up, in the order abandoned (at
	// most MaxAbandoned). Absent from snapshots written before rollbacks existed.
	Abandoned []AbandonedCheckpoint `json:"abandoned,omitempty"`
	// AbandonedRanges are the steps of abandoned checkpoints whose sha256s are no longer (or were
	// never) listed: those that fell off Abandoned, and those a rollback to a step older than
	// every checkpoint in Checkpoints gave up after keep_checkpoints had pruned them. Disjoint
	// ranges (Above, UpTo] in ascending order, Above the step their rollback went back to (a
	// rollback to step R abandons only checkpoints after R). A checkpoint a trainer's volume
	// holds at such a step is never adopted nor taken back by a rollback (unless Recommitted):
	// it cannot be told from an abandoned one, and one that came back would undo a rollback.
	// Steps there that the cluster commits again are committed as usual. At most
	// MaxAbandonedRanges; past it the two closest merge (a step forgotten wrongly is only
	// refused).
	AbandonedRanges []StepRange `json:"abandoned_ranges,omitempty"`
	// Recommitted are checkpoints of the line in force that were committed at forgotten
	// abandoned steps (AbandonedRanges) and since pruned from Checkpoints by keep_checkpoints:
	// a volume's copy with one of these sha256s is the line's own, a rollback restart point, not
	// an abandoned one. A rollback to a step below one abandons it (its step stays forgotten).
	// At most MaxAbandoned, the oldest go first (a copy of one that went is refused, as every
	// copy in those steps was before). Absent from snapshots written before it: every copy in
	// the forgotten steps is refused.
	Recommitted []Held `json:"recommitted,omitempty"`
	// Release is the newest release record applied (see Release): the version and rules
	// version of the leader that appended it and its raft term. Nil before the first record,
	// in logs and snapshots of releases before records existed.
	Release *Release    `json:"release,omitempty"`
	Loss    LossHistory `json:"loss"`
	Events  []Event     `json:"events"`

	// Dedup remembers the results of the last MaxDedup request ids, oldest first.
	Dedup      map[string]Result `json:"dedup"`
	DedupOrder []string          `json:"dedup_order"`
	// Applied counts the commands applied (including duplicates answered from Dedup).
	Applied uint64 `json:"applied"`
}

// New returns the empty state.
func New() *State {
	return &State{Members: map[string]*Member{}, Dedup: map[string]Result{}, Loss: NewLossHistory(DefaultLossCapacity)}
}

// Encode returns the state's canonical JSON (maps with sorted keys), the snapshot format.
func (s *State) Encode() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic("fsm: cannot encode state: " + err.Error())
	}
	return b
}

// Decode parses a state written by Encode; members of a snapshot written before incarnations get
// JoinSeq+1, the incarnation that replaying their Joins gives.
func Decode(b []byte) (*State, error) {
	s := New()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("fsm: decode snapshot: %w", err)
	}
	if s.Members == nil {
		s.Members = map[string]*Member{}
	}
	for _, m := range s.Members {
		if m.Incarnation == 0 {
			// A snapshot from before incarnations: JoinSeq+1 is what replaying its Joins gives.
			m.Incarnation = m.JoinSeq + 1
		}
	}
	if s.Dedup == nil {
		s.Dedup = map[string]Result{}
	}
	return s, nil
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	c, err := Decode(s.Encode())
	if err != nil {
		panic("fsm: clone: " + err.Error())
	}
	return c
}

// LatestCheckpoint returns the newest committed checkpoint, or nil.
func (s *State) LatestCheckpoint() *Checkpoint {
	if len(s.Checkpoints) == 0 {
		return nil
	}
	c := s.Checkpoints[len(s.Checkpoints)-1]
	return &c
}

// Abandons reports whether a rollback abandoned the checkpoint h (step and sha256): it is among
// Abandoned, or its step lies in the forgotten abandoned steps (AbandonedRanges) and it was not
// committed again (Recommitted). The rule the state machine itself applies to checkpoints members
// offer; a trainer asks it of a checkpoint it recorded.
func (s *State) Abandons(h Held) bool { return abandoned(s, h) }

// StillAbandoned returns the checkpoints rollbacks abandoned (step and sha256, in the order
// abandoned) except those committed again with the same sha256: a trainer whose volume holds one
// of them as committed must uncommit it, or sample, eval and export of the volume would take it
// for the run's model and its next join would offer it as a restart point. Nil when none.
func (s *State) StillAbandoned() []Held {
	var out []Held
	for _, a := range s.Abandoned {
		if c := findCheckpoint(s, a.Step); c != nil && c.SHA256 == a.SHA256 {
			continue
		}
		h := Held{Step: a.Step, SHA256: a.SHA256}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// HolderWait returns the newest committed checkpoint when the run waits for a holder of it: the
// run is not finished, enough members are there to start a generation, yet none of them holds
// that checkpoint (its holders left or were dropped), so no generation runs. Nil otherwise.
// Rollback (to RollbackTarget) is the way out when no holder can come back.
func (s *State) HolderWait() *Checkpoint {
	if s.Run == nil || s.Status.Terminal() || s.Generation.World > 0 || len(s.Members) < s.Run.MinTrainers {
		return nil
	}
	cp := s.LatestCheckpoint()
	if cp == nil || heldByMember(s, cp) {
		return nil
	}
	return cp
}

// TrainerWait describes the wait of a run that has fewer members than min_trainers (so no
// generation runs: world 0): "for N trainers (min_trainers), M joined: IDS", or "for N trainers
// (min_trainers), none joined". Empty when the run is not configured, finished, training, or
// has enough members (HolderWait covers a wait with enough members).
func (s *State) TrainerWait() string {
	if s.Run == nil || s.Status.Terminal() || s.Generation.World > 0 || len(s.Members) >= s.Run.MinTrainers {
		return ""
	}
	want := fmt.Sprintf("for %d trainers (min_trainers)", s.Run.MinTrainers)
	if s.Run.MinTrainers == 1 {
		want = "for 1 trainer (min_trainers)"
	}
	if len(s.Members) == 0 {
		return want + ", none joined"
	}
	ids := make([]string, 0, len(s.Members))
	for id := range s.Members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return fmt.Sprintf("%s, %d joined: %s", want, len(ids), strings.Join(ids, " "))
}

// RollbackTarget returns the step a rollback can restart the run from at the least loss: the
// newest committed checkpoint a current member holds; else the newest older one (no longer in
// Checkpoints) that a current member's volume holds (Member.Held) with one sha256; else 0 (the
// initial state).
func (s *State) RollbackTarget() int64 {
	for i := len(s.Checkpoints) - 1; i >= 0; i-- {
		if heldByMember(s, &s.Checkpoints[i]) {
			return s.Checkpoints[i].Step
		}
	}
	older := olderHeld(s)
	for i, c := range older {
		if (i == 0 || older[i-1].Step != c.Step) && (i+1 == len(older) || older[i+1].Step != c.Step) {
			return c.Step
		}
	}
	return 0
}

// RollbackPoint returns the checkpoint a rollback to step to restarts the run from: the
// committed checkpoint of that step, or the older one current members hold (Member.Held; Size 0
// and Generation 0, like an adopted checkpoint, Holders the members that hold it). Nil for step
// 0 and for a rollback PlanRollback refuses.
func (s *State) RollbackPoint(to int64) *Checkpoint {
	_, from, f := planRollback(s, to)
	if f != nil {
		return nil
	}
	return from
}

// PlanRollback returns the committed checkpoints a rollback to step to would abandon (those
// after it, ascending), or why it cannot be done: ErrNoRun, ErrRunFinished, or ErrBadRollback
// (to is neither a committed checkpoint nor an older one a current member's volume holds, no
// current member holds it, members hold different checkpoints at it, or no committed checkpoint
// is newer). A step older than every checkpoint in Checkpoints qualifies when a current member
// joined holding it (Member.Held) and no rollback abandoned it; the rollback then abandons every
// checkpoint in Checkpoints. Step 0 restarts from the initial parameters and needs no holder.
// Apply runs the same check on the Rollback command.
func (s *State) PlanRollback(to int64) ([]Checkpoint, error) {
	abandon, _, f := planRollback(s, to)
	if f != nil {
		return nil, Result{Code: f.code, Message: f.msg}.Err()
	}
	return abandon, nil
}

// Expired returns the ids, sorted, of members whose last heartbeat is older than the run's
// heartbeat timeout at time now (Unix ns). The leader proposes Expire when this is non-empty.
func (s *State) Expired(now int64) []string {
	if s.Run == nil {
		return nil
	}
	timeout := int64(s.Run.HeartbeatTimeout)
	var ids []string
	for id, m := range s.Members {
		if now-m.LastHeartbeat > timeout {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
