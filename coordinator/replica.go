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
	// ErrBadPeers: the static peer list is malformed.
	ErrBadPeers = errors.New("coordinator: bad peer list")
	// ErrShutdown: the replica is shutting down.
	ErrShutdown = errors.New("coordinator: shut down")
	// ErrNotCoordinator: the address answers gRPC but serves no coordinator (a trainer's
	// --listen address, another service).
	ErrNotCoordinator = errors.New("coordinator: not a coordinator")
)

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
	once  sync.Once
	// leadership carries raft's leadership changes (Config.NotifyCh); watchDone is closed when
	// raft has shut down, and watched when watchLeadership has returned.
	leadership chan bool
	watchDone  chan struct{}
	watched    chan struct{}
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
	r, err := raft.NewRaft(rc, a, cfg.LogStore, cfg.StableStore, cfg.Snapshots, cfg.Transport)
	if err != nil {
		return nil, fmt.Errorf("coordinator: start raft: %w", err)
	}
	rep := &Replica{cfg: cfg, raft: r, fsm: a, peers: peers, log: cfg.Logger.With("replica", cfg.ID), stop: make(chan struct{}),
		leadership: leadership, watchDone: make(chan struct{}), watched: make(chan struct{})}
	a.setOnEvent(func(ev fsm.Event) {
		if rep.IsLeader() {
			rep.log.Info(MsgClusterEvent, "kind", ev.Kind, "generation", ev.Generation, "text", ev.Text)
		}
	})
	go rep.watchLeadership()
	rep.wg.Add(1)
	go rep.detect()
	return rep, nil
}

// watchLeadership logs MsgBecameLeader and MsgLostLeadership from raft's notifications until
// raft has shut down, then logs what raft still sent.
func (r *Replica) watchLeadership() {
	defer close(r.watched)
	var term uint64 // the term this replica leads in
	note := func(leader bool) {
		if leader {
			term = r.raft.CurrentTerm()
			r.log.Info(MsgBecameLeader, "term", term)
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
// retry with the same RequestID and the state machine answers from its dedup table.
func (r *Replica) Propose(ctx context.Context, c fsm.Command) (fsm.Result, error) {
	if c.Time == 0 {
		c.Time = r.cfg.Now().UnixNano()
	}
	timeout := r.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
		if timeout <= 0 {
			return fsm.Result{}, fmt.Errorf("%w: %v", ErrUnavailable, context.DeadlineExceeded)
		}
	}
	f := r.raft.Apply(c.Encode(), timeout)
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
		}
		if !r.IsLeader() {
			leaderSince = time.Time{}
			continue
		}
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

// adapter is hashicorp/raft's FSM around the pure fsm.Apply.
type adapter struct {
	mu      sync.RWMutex
	state   *fsm.State
	applied uint64
	notify  chan struct{}
	onEvent func(fsm.Event) // each event an Apply records (under mu); nil: none
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

func newAdapter() *adapter { return &adapter{state: fsm.New(), notify: make(chan struct{})} }

// Apply implements raft.FSM. A malformed entry yields an ErrBadCommand result on every replica
// alike rather than a panic.
func (a *adapter) Apply(l *raft.Log) any {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = l.Index
	defer a.broadcast()
	c, err := fsm.DecodeCommand(l.Data)
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

// Restore implements raft.FSM: the snapshot replaces the state whole.
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
