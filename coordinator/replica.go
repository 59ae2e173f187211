// Package coordinator runs the cluster's source of truth: the pure state machine of
// coordinator/fsm replicated by hashicorp/raft, served over gRPC (api/coordinator.proto) and
// HTTP, plus the Go client trainers use (Dial).
//
// Layers, each usable alone:
//   - Replica: one raft member with the FSM adapter and the leader's failure detector; its
//     stores and transport come from the caller (tests use raft's in-memory ones).
//   - Server: the gRPC service on a Replica; any replica answers reads, writes are forwarded
//     to the leader.
//   - Node: a whole coordinator process: bbolt log and stable store (raft-boltdb/v2), file
//     snapshots, TCP transport, gRPC and HTTP listeners.
//   - Client: retries across replicas and follows the leader transparently.
package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"ddpm/coordinator/fsm"
	"ddpm/internal/version"
)

// Errors of this package; the state machine's own errors (fsm.ErrUnknownMember,
// fsm.ErrStaleGeneration, ...) pass through the server and the client unchanged, so
// errors.Is works on them end to end.
var (
	// ErrNotLeader: a write reached a replica that is not the leader and could not be forwarded.
	ErrNotLeader = errors.New("coordinator: not the raft leader")
	// ErrUnavailable: no replica answered before the context ended.
	ErrUnavailable = errors.New("coordinator: no replica available")
	// ErrVersionMismatch: a trainer's binary version differs from the coordinator's.
	ErrVersionMismatch = errors.New("binary version mismatch")
	// ErrUnauthenticated: the replica refused our join secret (a different cluster's --certs).
	ErrUnauthenticated = errors.New("coordinator: refused by the cluster")
	// ErrPermissionDenied: the replica refused the call for the role of our certificate (a
	// trainer's certificate calling RollbackRun, an operator's calling Join: tlsauth.Role).
	ErrPermissionDenied = errors.New("coordinator: permission denied")
	// ErrBadPeers: the static peer list is malformed.
	ErrBadPeers = errors.New("coordinator: bad peer list")
	// ErrShutdown: the replica is shutting down.
	ErrShutdown = errors.New("coordinator: shut down")
	// ErrNotCoordinator: the address answers gRPC but serves no coordinator (a trainer's
	// --listen address, another service).
	ErrNotCoordinator = errors.New("coordinator: not a coordinator")
	// ErrReleaseMismatch: replicas of two state machine rules versions (fsm.RulesVersion) met
	// in one cluster; see ReleaseMismatchError.
	ErrReleaseMismatch = errors.New("coordinator: replicas of two releases")
	// ErrDamagedStore: the raft data in --data-dir cannot be read back whole; see
	// DamagedStoreError.
	ErrDamagedStore = errors.New("coordinator: raft data damaged")
	// ErrStoreWrite: raft could not store its term or vote; see StoreWriteError.
	ErrStoreWrite = errors.New("coordinator: raft store write failed")
	// ErrNotDataDir: --data-dir is a folder of another of ddpm's roles (a ddpm local run
	// folder, a trainer's folder), refused before anything is written there; see CheckDataDir.
	ErrNotDataDir = errors.New("not a coordinator's data dir")
	// ErrDataDirInUse: another process holds --data-dir's raft.db (the replica started twice,
	// two replicas given one --data-dir); see inUse.
	ErrDataDirInUse = errors.New("in use")
	// ErrPeersMismatch: --peers is not the raft configuration that --data-dir holds (the
	// replicas and raft addresses the cluster began with); see checkHeldPeers.
	ErrPeersMismatch = errors.New("--peers is not the cluster's raft configuration")
)

// ReleaseMismatchError is why a replica stopped, or would not start, because another release's
// rules (fsm.RulesVersion) govern its raft log: replicas of two rules versions may apply one log
// differently and disagree about the run (which checkpoint is committed), so one must not go on.
//
//   - Applied from the leader it follows now (OnDisk false): the replica applied, or restored
//     from a snapshot, the release record (fsm.Release) of its current raft term, and that
//     leader's rules differ from its own. It applied nothing of that record or after it, shut its
//     raft member down (it neither votes nor campaigns, so it cannot be elected) and reports this
//     error on Replica.Halted; `ddpm coordinator` exits 2 with it. Whichever of the two releases
//     leads, the replicas of the other one stop: an older replica under a newer leader, a newer
//     replica under an older leader. Records of older terms (a whole run restarted on a new
//     release replays its old leaders' records) stop nobody.
//   - Found in its stores at start (OnDisk true): the newest release record in the replica's
//     snapshot and log carries a higher rules version than its own, so a newer release led this
//     log; NewReplica refuses to start rather than apply that log under older rules (a replica
//     stopped by a newer leader cannot come back and be elected on the old release).
//
// errors.Is(err, ErrReleaseMismatch) holds.
type ReleaseMismatchError struct {
	Replica string // this replica's raft id
	Version string // this replica's binary version
	Rules   int    // this replica's rules version
	// Leader is the release record that differs: the version, rules version and raft term of the
	// leader that appended it.
	Leader fsm.Release
	// OnDisk: found in the stored log or snapshot at start-up (NewReplica refused to start),
	// not while following a live leader.
	OnDisk bool
}

func (e *ReleaseMismatchError) Error() string {
	fix := `run every coordinator and trainer of a run on one release: stop the whole run, then start it all on the new release (README, "Upgrading ` + "`ddpm`" + `")`
	if e.OnDisk {
		return fmt.Sprintf("coordinator: replica %s (ddpm %s, state machine rules %d) will not start: its raft log was led in term %d by ddpm %s "+
			"with newer rules %d, which this release may apply differently; %s",
			e.Replica, e.Version, e.Rules, e.Leader.Term, e.Leader.Version, e.Leader.Rules, fix)
	}
	return fmt.Sprintf("coordinator: replica %s (ddpm %s, state machine rules %d) stopped: the leader of raft term %d runs ddpm %s "+
		"with state machine rules %d, and replicas of two rules versions may apply one log differently; %s",
		e.Replica, e.Version, e.Rules, e.Leader.Term, e.Leader.Version, e.Leader.Rules, fix)
}

// Unwrap returns ErrReleaseMismatch.
func (e *ReleaseMismatchError) Unwrap() error { return ErrReleaseMismatch }

// Messages a Replica logs at INFO, with attribute "term" (the raft term it led in), when it
// becomes the raft leader and when it stops being the leader (stepping down, or shutting down
// while leading). `ddpm local` shows these lines on the terminal.
const (
	MsgBecameLeader   = "became leader"
	MsgLostLeadership = "lost leadership"
)

// MsgClusterEvent is the message with which the leader logs, at INFO, each event the state
// machine records (a generation committed or waiting for trainers, a checkpoint committed, a
// trainer joining, dropped or failing; the same texts as the dashboard's and `ddpm status`'s
// event list), with attributes "kind", "generation" and "text". Only the leader logs them, so a
// cluster's logs hold each event once.
const MsgClusterEvent = "cluster event"

// Peer is one coordinator replica: its raft server id, raft address and gRPC address.
type Peer struct {
	ID       string
	RaftAddr string
	GRPCAddr string
}

// ReplicaConfig configures NewReplica. LogStore, StableStore, Snapshots and Transport are
// required; the rest have defaults.
type ReplicaConfig struct {
	ID    string
	Peers []Peer // every voter, this replica included
	// Bootstrap makes this replica write the initial configuration (all Peers as voters) when
	// its stores are empty. Giving it on every replica of a fresh cluster is safe.
	Bootstrap bool
	// Raft overrides the raft tuning; nil means FastRaftConfig. NewReplica works on a copy; its
	// NotifyCh must be nil (the replica watches leadership through it).
	Raft        *raft.Config
	LogStore    raft.LogStore
	StableStore raft.StableStore
	Snapshots   raft.SnapshotStore
	Transport   raft.Transport
	// Now is the clock that stamps commands (default time.Now).
	Now func() time.Time
	// DetectEvery is how often the leader checks for silent trainers (default 250ms).
	DetectEvery time.Duration
	// ApplyTimeout bounds one raft.Apply (default 5s).
	ApplyTimeout time.Duration
	Logger       *slog.Logger
	// RaftLog receives hashicorp/raft's own log lines (default: discarded below warnings).
	RaftLog io.Writer
	// Version is the binary version the replica's release records name (default
	// internal/version.Version).
	Version string
	// Rules is the state machine rules version this replica applies the log under and names in
	// its release records (default fsm.RulesVersion; tests set another to play a replica of
	// another release).
	Rules int
}

// FastRaftConfig returns raft settings tuned for a LAN cluster that must fail over within a
// few seconds: heartbeat and election timeouts 500ms, leader lease 250ms, snapshots every 2048
// entries.
func FastRaftConfig(id string) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(id)
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 250 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
	c.SnapshotThreshold = 2048
	c.SnapshotInterval = 20 * time.Second
	c.TrailingLogs = 1024
	return c
}

// Replica is one raft member running the coordinator's state machine.
type Replica struct {
	cfg   ReplicaConfig
	raft  *raft.Raft
	fsm   *adapter
	peers map[string]Peer
	log   *slog.Logger
	stop  chan struct{}
	wg    sync.WaitGroup
	// halted (Halted) is closed by watchHalt once the adapter's halt is logged, so that an owner
	// that exits on it prints its last line after the log's.
	halted chan struct{}
	once   sync.Once
	// leadership carries raft's leadership changes (Config.NotifyCh); watchDone is closed when
	// raft has shut down, and watched when watchLeadership has returned.
	leadership chan bool
	watchDone  chan struct{}
	watched    chan struct{}
	// won wakes the failure detector when this replica becomes leader, to record its release.
	won chan struct{}
	// releasing (a one-slot semaphore, so that a waiter can give up with its context)
	// serializes Propose's check that this replica leads in a term whose release record is in
	// the log; releasedTerm, guarded by it, is the term whose record this replica, leading, has
	// committed.
	releasing    chan struct{}
	releasedTerm uint64
}

// NewReplica starts a raft member. It returns ErrBadPeers if Peers does not list ID, and raft's
// errors wrapped otherwise.
func NewReplica(cfg ReplicaConfig) (*Replica, error) {
	if cfg.LogStore == nil || cfg.StableStore == nil || cfg.Snapshots == nil || cfg.Transport == nil {
		panic("coordinator: ReplicaConfig needs LogStore, StableStore, Snapshots and Transport")
	}
	peers := map[string]Peer{}
	for _, p := range cfg.Peers {
		if p.ID == "" || p.RaftAddr == "" {
			return nil, fmt.Errorf("%w: peer %+v needs an id and a raft address", ErrBadPeers, p)
		}
		if _, dup := peers[p.ID]; dup {
			return nil, fmt.Errorf("%w: peer id %q twice", ErrBadPeers, p.ID)
		}
		peers[p.ID] = p
	}
	if _, ok := peers[cfg.ID]; !ok {
		return nil, fmt.Errorf("%w: this replica's id %q is not among the peers", ErrBadPeers, cfg.ID)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DetectEvery <= 0 {
		cfg.DetectEvery = 250 * time.Millisecond
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Version == "" {
		cfg.Version = version.Version
	}
	if cfg.Rules == 0 {
		cfg.Rules = fsm.RulesVersion
	}
	if cfg.Rules < 0 {
		panic(fmt.Sprintf("coordinator: ReplicaConfig.Rules %d is negative", cfg.Rules))
	}
	if rel, err := newestRelease(cfg.LogStore, cfg.Snapshots); err != nil {
		return nil, err
	} else if rel != nil && rel.Rules > cfg.Rules {
		return nil, &ReleaseMismatchError{Replica: cfg.ID, Version: cfg.Version, Rules: cfg.Rules, Leader: *rel, OnDisk: true}
	}
	rc := FastRaftConfig(cfg.ID)
	if cfg.Raft != nil {
		if cfg.Raft.NotifyCh != nil {
			panic("coordinator: ReplicaConfig.Raft.NotifyCh must be nil: the replica watches leadership through it")
		}
		c := *cfg.Raft
		rc = &c
	}
	// Raft blocks on this channel while nobody reads it; watchLeadership reads it from the
	// moment NewRaft returns, and the buffer lets raft's last notification at shutdown through.
	leadership := make(chan bool, 1)
	rc.NotifyCh = leadership
	rc.LocalID = raft.ServerID(cfg.ID)
	if rc.Logger == nil {
		out, level := cfg.RaftLog, hclog.Info
		if out == nil {
			out, level = io.Discard, hclog.Off
		}
		rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft " + cfg.ID, Output: out, Level: level})
	}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(cfg.LogStore, cfg.StableStore, cfg.Snapshots)
		if err != nil {
			return nil, fmt.Errorf("coordinator: read raft state: %w", err)
		}
		if !has {
			var servers []raft.Server
			for _, p := range cfg.Peers {
				servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
			}
			if err := raft.BootstrapCluster(rc, cfg.LogStore, cfg.StableStore, cfg.Snapshots, cfg.Transport,
				raft.Configuration{Servers: servers}); err != nil {
				return nil, fmt.Errorf("coordinator: bootstrap: %w", err)
			}
		}
	}
	a := newAdapter()
	a.id, a.version, a.rules = cfg.ID, cfg.Version, cfg.Rules
	r, err := raft.NewRaft(rc, a, cfg.LogStore, cfg.StableStore, cfg.Snapshots, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("coordinator: start raft: %w", err)
	}
	a.setTerm(r.CurrentTerm)
	rep := &Replica{cfg: cfg, raft: r, fsm: a, peers: peers, log: cfg.Logger.With("replica", cfg.ID), stop: make(chan struct{}), halted: make(chan struct{}),
		leadership: leadership, watchDone: make(chan struct{}), watched: make(chan struct{}), won: make(chan struct{}, 1),
		releasing: make(chan struct{}, 1)}
	a.setOnEvent(func(ev fsm.Event) {
		if rep.IsLeader() {
			rep.log.Info(MsgClusterEvent, "kind", ev.Kind, "generation", ev.Generation, "text", ev.Text)
		}
	})
	go rep.watchLeadership()
	rep.wg.Add(1)
	go rep.detect()
	// Last: a halt may come at once, and its Shutdown waits for the goroutines started above.
	go rep.watchHalt()
	return rep, nil
}

// watchHalt shuts the replica down when its state machine halts on a release mismatch (the
// adapter cannot: raft's shutdown waits for the very Apply that found it), logging the mismatch
// at ERROR.
func (r *Replica) watchHalt() {
	select {
	case <-r.stop:
		select {
		case <-r.fsm.halted: // both at once: the halt is still said
			r.log.Error(r.fsm.haltErr().Error())
			close(r.halted)
		default:
		}
	case <-r.fsm.halted:
		r.log.Error(r.fsm.haltErr().Error())
		close(r.halted)
		if err := r.Shutdown(); err != nil {
			r.log.Warn("shut down after a release mismatch", "err", err)
		}
	}
}

// Halted is closed when the replica stopped itself because the leader it follows runs another
// state machine rules version; HaltError then says which (a *ReleaseMismatchError). The replica
// has applied nothing of that leader's release record or after it, and its raft member is shut
// down. Its owner should stop serving and exit. It is closed once the mismatch is logged at
// ERROR, so a line the owner prints on it comes after that log line.
func (r *Replica) Halted() <-chan struct{} { return r.halted }

// HaltError returns the *ReleaseMismatchError that halted the replica, or nil.
func (r *Replica) HaltError() error {
	if err := r.fsm.haltErr(); err != nil {
		return err
	}
	return nil
}

// newestRelease returns the newest release record (fsm.Release, Term from its entry) in the
// newest readable snapshot of snaps and the entries of logs after it; nil when there is none.
func newestRelease(logs raft.LogStore, snaps raft.SnapshotStore) (*fsm.Release, error) {
	var rel *fsm.Release
	from := uint64(0)
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("coordinator: snapshots: %w", err)
	}
	for _, m := range metas { // newest first; raft falls back to an older one when one is unreadable
		if s, ok := readSnapshot(snaps, m.ID); ok {
			rel, from = s.Release, m.Index
			break
		}
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("coordinator: read raft log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("coordinator: read raft log: %w", err)
	}
	for i := max(first, from+1); i != 0 && i <= last; i++ {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("coordinator: read raft log entry %d: %w", i, err)
		}
		if l.Type != raft.LogCommand || !bytes.Contains(l.Data, releaseKindJSON) {
			continue
		}
		if c, err := fsm.DecodeCommand(l.Data); err == nil && c.Kind == fsm.KindRelease && c.Release != nil {
			r := *c.Release
			r.Term = l.Term
			rel = &r
		}
	}
	return rel, nil
}

// releaseKindJSON is how a release record's kind appears in its entry: a cheap filter before
// decoding.
var releaseKindJSON = []byte(`"kind":"` + string(fsm.KindRelease) + `"`)

// watchLeadership logs MsgBecameLeader and MsgLostLeadership from raft's notifications until
// raft has shut down, then logs what raft still sent.
func (r *Replica) watchLeadership() {
	defer close(r.watched)
	var term uint64 // the term this replica leads in
	note := func(leader bool) {
		if leader {
			term = r.raft.CurrentTerm()
			r.log.Info(MsgBecameLeader, "term", term)
			select {
			case r.won <- struct{}{}:
			default:
			}
		} else {
			r.log.Info(MsgLostLeadership, "term", term)
		}
	}
	for {
		select {
		case leader := <-r.leadership:
			note(leader)
		case <-r.watchDone:
			for {
				select {
				case leader := <-r.leadership:
					note(leader)
				default:
					return
				}
			}
		}
	}
}

// ID returns the replica's raft server id.
func (r *Replica) ID() string { return r.cfg.ID }

// Raft exposes the underlying raft member (tests and diagnostics).
func (r *Replica) Raft() *raft.Raft { return r.raft }

// IsLeader reports whether this replica is the raft leader now.
func (r *Replica) IsLeader() bool { return r.raft.State() == raft.Leader }

// Leader returns the current leader as this replica knows it; zero Peer if none is known.
func (r *Replica) Leader() Peer {
	_, id := r.raft.LeaderWithID()
	if id == "" {
		return Peer{}
	}
	if p, ok := r.peers[string(id)]; ok {
		return p
	}
	return Peer{ID: string(id)}
}

// peerIDs returns the ids of the static peer list (ReplicaConfig.Peers) in its order.
func (r *Replica) peerIDs() []string {
	var ids []string
	for _, p := range r.cfg.Peers {
		ids = append(ids, p.ID)
	}
	return ids
}

// ReplicaAddrs returns the gRPC addresses of every replica of the static peer list
// (ReplicaConfig.Peers, this one included) in that list's order, leaving out peers without one.
func (r *Replica) ReplicaAddrs() []string {
	var out []string
	for _, p := range r.cfg.Peers {
		if p.GRPCAddr != "" {
			out = append(out, p.GRPCAddr)
		}
	}
	return out
}

// View calls fn with the replica's current state under a read lock; fn must not keep it.
func (r *Replica) View(fn func(s *fsm.State)) { r.fsm.view(fn) }

// AppliedIndex is the raft index of the last entry the FSM applied, or of the snapshot it was
// restored from when that is newer (Restore learns no index: raft's own count covers it).
func (r *Replica) AppliedIndex() uint64 { return max(r.fsm.index(), r.raft.AppliedIndex()) }

// Changed returns a channel that is closed at the next state change.
func (r *Replica) Changed() <-chan struct{} { return r.fsm.changed() }

// Propose commits c through raft and returns the state machine's result. Only the leader can
// propose: elsewhere it returns ErrNotLeader. Command.Time is stamped with the replica's clock
// when zero. A command whose result is lost (a leader change mid-way) may still have committed:
// retry with the same RequestID and the state machine answers from its dedup table. The first
// command a leader proposes in a raft term goes after its release record (fsm.KindRelease),
// which it also appends unasked as soon as it wins the election (the failure detector's loop).
func (r *Replica) Propose(ctx context.Context, c fsm.Command) (fsm.Result, error) {
	if c.Time == 0 {
		c.Time = r.cfg.Now().UnixNano()
	}
	if err := r.acquireRelease(ctx); err != nil {
		return fsm.Result{}, err
	}
	// A replica that does not lead proposes nothing: one that became leader while such a
	// Propose was on its way to raft would take the command into its new term before its
	// record. (The semaphore is not held while the command waits for raft's queue, where
	// raft batches concurrent commands into one write.)
	err := r.recordRelease(ctx)
	<-r.releasing
	if err != nil {
		return fsm.Result{}, err
	}
	f, err := r.enqueue(ctx, c)
	if err != nil {
		return fsm.Result{}, err
	}
	return r.result(f)
}

// acquireRelease takes the releasing semaphore, or gives up with ctx (ErrUnavailable).
func (r *Replica) acquireRelease(ctx context.Context) error {
	select {
	case r.releasing <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// ensureRelease appends this term's release record (fsm.Release: this replica's version and
// rules) unless it is in the log already; ErrNotLeader where this replica does not lead.
func (r *Replica) ensureRelease(ctx context.Context) error {
	if err := r.acquireRelease(ctx); err != nil {
		return err
	}
	defer func() { <-r.releasing }()
	return r.recordRelease(ctx)
}

// recordRelease, holding the releasing semaphore, returns once this replica leads in a term whose
// release record it has committed, appending the record first when it has not; ErrNotLeader where
// it does not lead, ErrShutdown once its raft member has shut down.
func (r *Replica) recordRelease(ctx context.Context) error {
	for {
		switch r.raft.State() {
		case raft.Leader:
		case raft.Shutdown:
			return ErrShutdown
		default:
			return fmt.Errorf("%w: %v", ErrNotLeader, raft.ErrNotLeader)
		}
		// Read after the leadership: a later term than the one it led in when checked, never an
		// earlier one, so a record committed for this term's number went into this term or a later.
		term := r.raft.CurrentTerm()
		if r.releasedTerm >= term {
			return nil
		}
		f, err := r.enqueue(ctx, fsm.Command{Kind: fsm.KindRelease, Time: r.cfg.Now().UnixNano(),
			Release: &fsm.Release{Version: r.cfg.Version, Rules: r.cfg.Rules}})
		if err != nil {
			return err
		}
		res, err := r.result(f)
		if err != nil {
			return err
		}
		if err := res.Err(); err != nil {
			return fmt.Errorf("coordinator: release record: %w", err)
		}
		r.releasedTerm = term
	}
}

// enqueue hands c to raft within ApplyTimeout (or ctx's deadline, if sooner) and returns its
// future.
func (r *Replica) enqueue(ctx context.Context, c fsm.Command) (raft.ApplyFuture, error) {
	timeout := r.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
		if timeout <= 0 {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, context.DeadlineExceeded)
		}
	}
	return r.raft.Apply(c.Encode(), timeout), nil
}

// result waits for f and returns the state machine's result, raft's errors mapped to this
// package's.
func (r *Replica) result(f raft.ApplyFuture) (fsm.Result, error) {
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrLeadershipTransferInProgress), errors.Is(err, raft.ErrEnqueueTimeout):
			return fsm.Result{}, fmt.Errorf("%w: %v", ErrNotLeader, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return fsm.Result{}, ErrShutdown
		}
		return fsm.Result{}, fmt.Errorf("coordinator: raft apply: %w", err)
	}
	res, ok := f.Response().(fsm.Result)
	if !ok {
		return fsm.Result{}, fmt.Errorf("coordinator: raft apply: %v", f.Response())
	}
	return res, nil
}

// detect is the leader's failure detector: it proposes an Expire command whenever a member's
// last heartbeat is older than the run's timeout. A new leader waits one full timeout first, so
// that trainers have time to find it before anyone is declared dead.
func (r *Replica) detect() {
	defer r.wg.Done()
	tick := time.NewTicker(r.cfg.DetectEvery)
	defer tick.Stop()
	var leaderSince time.Time
	for {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		case <-r.won:
		}
		if !r.IsLeader() {
			leaderSince = time.Time{}
			continue
		}
		// A new leader records its release at once, written or not by anyone.
		rctx, rcancel := context.WithTimeout(context.Background(), r.cfg.ApplyTimeout)
		if err := r.ensureRelease(rctx); err != nil && r.IsLeader() {
			r.log.Warn("release record", "err", err)
		}
		rcancel()
		now := r.cfg.Now()
		if leaderSince.IsZero() {
			leaderSince = now
		}
		var expired []string
		var timeout time.Duration
		r.View(func(s *fsm.State) {
			if s.Run != nil {
				timeout = s.Run.HeartbeatTimeout.Std()
				expired = s.Expired(now.UnixNano())
			}
		})
		if len(expired) == 0 || now.Sub(leaderSince) < timeout {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.ApplyTimeout)
		if _, err := r.Propose(ctx, fsm.Command{Kind: fsm.KindExpire, Time: now.UnixNano()}); err != nil {
			r.log.Warn("expire silent trainers", "err", err)
		} else {
			r.log.Info("removed silent trainers", "ids", expired)
		}
		cancel()
	}
}

// Shutdown stops the failure detector and raft (a leader logs MsgLostLeadership). It does not
// close the stores or transport the caller gave.
func (r *Replica) Shutdown() error {
	var err error
	r.once.Do(func() {
		close(r.stop)
		r.wg.Wait()
		err = r.raft.Shutdown().Error()
		close(r.watchDone)
		<-r.watched
	})
	return err
}

// adapter is hashicorp/raft's FSM around the pure fsm.Apply. It also guards the log's rules: an
// entry of the replica's current raft term whose release record (the entry itself, or the one in
// force) names other rules than the replica's halts it (see ReleaseMismatchError): raft cannot
// fail an entry, so the adapter stops applying, keeps the state as it was before that entry,
// answers every later entry with an ErrBadCommand result naming the mismatch, and closes halted
// for the Replica to shut raft down.
type adapter struct {
	mu      sync.RWMutex
	state   *fsm.State
	applied uint64
	notify  chan struct{}
	onEvent func(fsm.Event) // each event an Apply records (under mu); nil: none
	// id, version and rules are this replica's, named by a ReleaseMismatchError.
	id, version string
	rules       int
	// term is raft's current term (nil while raft starts: a snapshot restored then is the
	// replica's own, from before the restart, so only later entries are checked).
	term func() uint64
	// halt is the mismatch that halted the adapter; halted is closed then.
	halt   *ReleaseMismatchError
	halted chan struct{}
}

// setTerm installs raft's current-term getter.
func (a *adapter) setTerm(fn func() uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.term = fn
}

// haltErr returns the mismatch that halted the adapter, or nil.
func (a *adapter) haltErr() *ReleaseMismatchError {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.halt
}

// mustHalt reports whether an entry (or snapshot) of raft term entryTerm, governed by release
// record rel, must not be applied here, and halts the adapter if so: rel was appended in that
// term by the leader this replica follows now, and names other rules than this replica's.
// Entries of older terms replay under this replica's rules (a whole run restarted on one new
// release applies its old log alike everywhere). The caller holds mu.
func (a *adapter) mustHalt(entryTerm uint64, rel *fsm.Release) bool {
	if a.halt != nil {
		return true
	}
	if rel == nil || rel.Rules == a.rules || rel.Term != entryTerm || a.term == nil || a.term() != entryTerm {
		return false
	}
	a.halt = &ReleaseMismatchError{Replica: a.id, Version: a.version, Rules: a.rules, Leader: *rel}
	close(a.halted)
	return true
}

// setOnEvent installs fn to be called with each event later Applies record.
func (a *adapter) setOnEvent(fn func(fsm.Event)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onEvent = fn
}

// newEvents returns the events of a.state recorded after last (the newest event before an
// Apply; ok false when there was none). The list keeps fsm.MaxEvents, so last may have moved
// towards the front but not out of it unless one Apply recorded that many.
func (a *adapter) newEvents(last fsm.Event, ok bool) []fsm.Event {
	evs := a.state.Events
	if !ok {
		return evs
	}
	for k := len(evs) - 1; k >= 0; k-- {
		if evs[k] == last {
			return evs[k+1:]
		}
	}
	return evs
}

func newAdapter() *adapter {
	return &adapter{state: fsm.New(), notify: make(chan struct{}), rules: fsm.RulesVersion, halted: make(chan struct{})}
}

// Apply implements raft.FSM. A malformed entry yields an ErrBadCommand result on every replica
// alike rather than a panic. A release record gets its entry's term (fsm.Release.Term); an entry
// governed by another release's rules halts the adapter (mustHalt) and changes nothing.
func (a *adapter) Apply(l *raft.Log) any {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.halt != nil {
		return fsm.Result{Code: "bad_command", Message: a.halt.Error(), Generation: a.state.Generation.Number}
	}
	c, err := fsm.DecodeCommand(l.Data)
	rel := a.state.Release
	if err == nil && c.Kind == fsm.KindRelease && c.Release != nil {
		c.Release.Term = l.Term
		rel = c.Release
	}
	if a.mustHalt(l.Term, rel) {
		return fsm.Result{Code: "bad_command", Message: a.halt.Error(), Generation: a.state.Generation.Number}
	}
	a.applied = l.Index
	defer a.broadcast()
	if err != nil {
		return fsm.Result{Code: "bad_command", Message: err.Error(), Generation: a.state.Generation.Number}
	}
	if a.onEvent == nil {
		return fsm.Apply(a.state, c)
	}
	var last fsm.Event
	had := len(a.state.Events) > 0
	if had {
		last = a.state.Events[len(a.state.Events)-1]
	}
	res := fsm.Apply(a.state, c)
	for _, ev := range a.newEvents(last, had) {
		a.onEvent(ev)
	}
	return res
}

// broadcast wakes the watchers; the caller holds mu.
func (a *adapter) broadcast() {
	close(a.notify)
	a.notify = make(chan struct{})
}

// Snapshot implements raft.FSM: it encodes the state now (cheap at this size) and writes later.
func (a *adapter) Snapshot() (raft.FSMSnapshot, error) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return snapshot(a.state.Encode()), nil
}

// Restore implements raft.FSM: the snapshot replaces the state whole, unless its release record
// halts the adapter (mustHalt: the snapshot comes from a leader of this term with other rules),
// which keeps the state it had and returns the *ReleaseMismatchError.
func (a *adapter) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("coordinator: read snapshot: %w", err)
	}
	s, err := fsm.Decode(b)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if s.Release != nil && a.mustHalt(s.Release.Term, s.Release) {
		return a.halt
	}
	a.state = s
	a.broadcast()
	return nil
}

func (a *adapter) view(fn func(*fsm.State)) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	fn(a.state)
}

func (a *adapter) index() uint64 {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.applied
}

func (a *adapter) changed() <-chan struct{} {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.notify
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return fmt.Errorf("coordinator: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
